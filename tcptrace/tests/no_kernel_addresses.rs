//! No kernel address leaves the process: every output of a real scenario — `watch
//! --json` event lines, `watch --timelines --json`, the logs at trace level, `/metrics`
//! and every JSON endpoint, each connection by its id — is scanned for anything that
//! looks like one. A `struct sock` address would defeat KASLR for whoever can read the
//! port or the output.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    time::Duration,
};

use common::{
    require_root,
    serve::{eventually, Serve},
    set_linger_zero,
};

// Outside serve.rs's TIME_WAIT ports (25000–25999): this test's TIME_WAIT sockets would
// still be there when that binary counts its own.
const PORT: u16 = 29201;
const CLOSED_PORT: u16 = 29202;

/// The lowest kernel address on x86_64 (the start of the kernel half).
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

/// Every token of `text` that reads as a kernel address: hex (with or without `0x`) or
/// decimal, as serde and `{:x}`/`{:#x}` would print a u64.
fn kernel_addresses(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|token| {
            let hex = token.strip_prefix("0x").unwrap_or(token);
            let as_hex =
                hex.len() == 16 && u64::from_str_radix(hex, 16).is_ok_and(|n| n >= KERNEL_HALF);
            let as_decimal =
                token.len() == 20 && token.parse::<u64>().is_ok_and(|n| n >= KERNEL_HALF);
            as_hex || as_decimal
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_scanner_finds_what_it_looks_for() {
    let line = format!(
        r#"{{"skaddr":{},"hex":"{:#x}","bare":"{:x}","port":8080,"netns":4026531840}}"#,
        0xffff_8880_1234_5678_u64, 0xffff_9a00_0000_0040_u64, 0xffff_ffff_8100_0000_u64
    );
    assert_eq!(kernel_addresses(&line).len(), 3, "{line}");
    assert!(kernel_addresses(r#"{"id":12,"bytes":18446744073,"ts_ns":1234567890123}"#).is_empty());
}

/// Everything a process printed until now.
fn drain(lines: &mpsc::Receiver<String>) -> Vec<String> {
    lines.try_iter().collect()
}

#[test]
#[ignore = "needs root"]
fn no_output_carries_a_kernel_address() {
    require_root();
    let port = PORT.to_string();
    let closed_port = CLOSED_PORT.to_string();
    let filter = [
        "-P",
        &port,
        "-P",
        &closed_port,
        "--reconcile-interval",
        "300ms",
    ];
    let env = [("RUST_LOG", "trace")];
    let events = Serve::run_with_env("watch", &[&["--json"][..], &filter].concat(), &env);
    let timelines = Serve::run_with_env(
        "watch",
        &[&["--json", "--timelines"][..], &filter].concat(),
        &env,
    );

    // A story of each kind: an orderly close with data, a CLOSE_WAIT leak, an abort
    // (RSTs sent and received), a refused connect, a listener with a queue.
    let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
    let listener = TcpListener::bind(addr).unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).unwrap();
    drop(client);
    drop(server);
    let leaking_client = TcpStream::connect(addr).unwrap();
    let (_leak, _) = listener.accept().unwrap();
    drop(leaking_client);
    let aborted = TcpStream::connect(addr).unwrap();
    let (_aborted_peer, _) = listener.accept().unwrap();
    set_linger_zero(&aborted);
    drop(aborted);
    let queued = TcpStream::connect(addr).unwrap();
    assert!(TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], CLOSED_PORT))).is_err());

    // Until the timelines are out and a reconcile has seen the leak.
    eventually(
        Duration::from_secs(20),
        "the scenario's closes in /api/closed",
        || {
            let closed = events.json("/api/closed");
            (closed["matching"].as_u64()? >= 5).then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(800));

    let mut outputs: Vec<(String, String)> = Vec::new();
    for serve in [&events, &timelines] {
        for path in [
            "/metrics",
            "/healthz",
            "/api/connections",
            "/api/closed",
            "/api/leaks",
            "/api/listeners",
            "/api/half-open",
            "/api/overview",
            "/api/health",
        ] {
            let (status, body) = serve.get(path);
            assert_eq!(status, 200, "{path}: {body}");
            outputs.push((path.to_owned(), body));
        }
        // Every connection by its id, live and finished.
        let mut ids: Vec<u64> = Vec::new();
        for list in ["/api/connections", "/api/closed"] {
            let value = serve.json(list);
            ids.extend(
                value["connections"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|c| c["id"].as_u64()),
            );
        }
        assert!(ids.len() >= 5, "{ids:?}");
        for id in ids {
            let path = format!("/api/connections/{id}");
            let (status, body) = serve.get(&path);
            assert_eq!(status, 200, "{path}: {body}");
            let paired = serde_json::from_str::<serde_json::Value>(&body).unwrap()["peer"].is_u64();
            outputs.push((path, body));
            // The web view's sequence diagram, for connections with both ends here.
            if paired {
                let path = format!("/api/connections/{id}/diagram.svg");
                let (status, body) = serve.get(&path);
                assert_eq!(status, 200, "{path}: {body}");
                outputs.push((path, body));
            }
        }
    }
    let printed = drain(&events.output);
    let timeline_lines = drain(&timelines.output);
    assert!(
        printed.iter().any(|l| l.contains("\"connection\":")),
        "{printed:#?}"
    );
    assert!(
        timeline_lines.iter().any(|l| l.contains("\"lifecycle\"")),
        "{timeline_lines:#?}"
    );
    outputs.push(("watch --json".into(), printed.join("\n")));
    outputs.push(("watch --timelines --json".into(), timeline_lines.join("\n")));
    outputs.push(("logs".into(), drain(&events.log).join("\n")));
    outputs.push(("logs (timelines)".into(), drain(&timelines.log).join("\n")));

    for (what, text) in &outputs {
        let found = kernel_addresses(text);
        assert!(
            found.is_empty(),
            "{what} carries kernel addresses {found:?}:\n{text}"
        );
    }
    drop(queued);
}
