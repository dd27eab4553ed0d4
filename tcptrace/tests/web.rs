//! `--web.config.file` as an operator uses it: the exporter-toolkit file node_exporter
//! takes, with a CA and certificates the test makes with `openssl`, checked by real TLS
//! clients (curl, a real Prometheus); a bad file refused before anything is loaded; the
//! guard timeouts on real sockets. Privileged where the daemon runs (it loads the
//! programs); the bad-file cases need no root, as nothing is loaded.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{serve::*, *};

const TCPTRACE: &str = env!("CARGO_BIN_EXE_tcptrace");
const WAIT: Duration = Duration::from_secs(30);
/// bcrypt cost of the test's users: low, as the daemon under test is a debug build.
const COST: u32 = 6;

/// `openssl …` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and localhost signed by it, a client
/// certificate signed by it, and a self-signed client certificate no one trusts; all
/// P-256, in a temporary directory.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let d = &dir.0;
        let key = |name: &str| {
            openssl(
                d,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    name,
                ],
            )
        };
        key("ca.key");
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=tcptrace test CA",
            ],
        );
        let signed = |name: &str, cn: &str, ext: &str| {
            key(&format!("{name}.key"));
            openssl(
                d,
                &[
                    "req",
                    "-new",
                    "-key",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={cn}"),
                ],
            );
            std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        };
        signed(
            "server",
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        );
        signed(
            "client",
            "prometheus",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        );
        key("rogue.key");
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "rogue.key",
                "-out",
                "rogue.pem",
                "-days",
                "2",
                "-subj",
                "/CN=rogue",
            ],
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    /// Writes `web.yml` (exporter-toolkit format) and returns its path.
    fn web_config(&self, yaml: &str) -> PathBuf {
        let path = self.path("web.yml");
        std::fs::write(&path, yaml).unwrap();
        path
    }
}

/// What curl got: its exit code, the HTTP status (0 when there was no response), the
/// response headers and body, and its error message.
struct Curl {
    exit: i32,
    status: u16,
    head: String,
    body: String,
    stderr: String,
}

fn curl(args: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rest, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status: status.trim().parse().unwrap_or(0),
        head: head.to_owned(),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn https(serve: &Serve, path: &str) -> String {
    format!("https://{}{path}", serve.addr)
}

#[test]
#[ignore = "needs root"]
fn tls_and_basic_auth_from_a_node_exporter_web_config() {
    require_root();
    let pki = Pki::new("web-tls");
    let hash = bcrypt::hash("scrape-secret", COST).unwrap();
    // Relative paths: relative to the file's directory, not to tcptrace's.
    let config = pki.web_config(&format!(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n\
         http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
         basic_auth_users:\n  prometheus: {hash}\n"
    ));
    let serve = Serve::start(&["-P", "24101", "--web.config.file", config.to_str().unwrap()]);
    let ca = pki.path("ca.pem");
    let ca = ca.to_str().unwrap();

    // The right user and password, over TLS checked against the test's CA.
    let ok = curl(&[
        "--cacert",
        ca,
        "-u",
        "prometheus:scrape-secret",
        &https(&serve, "/metrics"),
    ]);
    assert_eq!((ok.exit, ok.status), (0, 200), "{}{}", ok.head, ok.stderr);
    assert!(ok.body.contains("tcptrace_build_info"), "{}", ok.body);
    assert!(
        ok.head
            .to_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{}",
        ok.head
    );
    // Again (the cached check), and the JSON API too.
    let api = curl(&[
        "--cacert",
        ca,
        "-u",
        "prometheus:scrape-secret",
        &https(&serve, "/api/leaks"),
    ]);
    assert_eq!(api.status, 200, "{}", api.body);

    // No credentials, a wrong password, an unknown user: 401 with a Basic challenge.
    for credentials in [
        None,
        Some("prometheus:wrong"),
        Some("mallory:scrape-secret"),
    ] {
        let mut args = vec!["--cacert", ca];
        if let Some(c) = credentials {
            args.extend(["-u", c]);
        }
        let url = https(&serve, "/metrics");
        args.push(&url);
        let denied = curl(&args);
        assert_eq!(denied.status, 401, "{credentials:?}: {}", denied.body);
        assert!(
            denied
                .head
                .contains("www-authenticate: Basic realm=\"tcptrace\""),
            "{}",
            denied.head
        );
        assert!(!denied.body.contains("tcptrace_"), "{}", denied.body);
    }

    // A client that does not trust the CA stops at the handshake.
    let untrusted = curl(&["-u", "prometheus:scrape-secret", &https(&serve, "/metrics")]);
    assert_eq!(
        untrusted.exit, 60,
        "curl: peer certificate cannot be authenticated: {}",
        untrusted.stderr
    );
    // Plain HTTP on the TLS port: told so, never served.
    let plain = curl(&[
        "-u",
        "prometheus:scrape-secret",
        &format!("http://{}/metrics", serve.addr),
    ]);
    assert_eq!(plain.status, 400, "{}", plain.body);
    assert!(
        plain.body.contains("HTTP request to an HTTPS server"),
        "{}",
        plain.body
    );
    // TLS 1.2 and 1.3 both work (the default min_version is TLS12).
    for version in [
        ["--tlsv1.2", "--tls-max", "1.2"],
        ["--tlsv1.3", "--tls-max", "1.3"],
    ] {
        let mut args = version.to_vec();
        let url = https(&serve, "/healthz");
        args.extend(["--cacert", ca, "-u", "prometheus:scrape-secret", &url]);
        assert_eq!(curl(&args).status, 200, "{version:?}");
    }

    // Counted: three refusals (before any Prometheus), the plain request.
    let metrics = curl(&[
        "--cacert",
        ca,
        "-u",
        "prometheus:scrape-secret",
        &https(&serve, "/metrics"),
    ])
    .body;
    let count = |name: &str, reason: &str| sample(&metrics, name, &format!("reason=\"{reason}\""));
    assert_eq!(
        count("tcptrace_http_requests_refused_total", "unauthorized"),
        Some(3.0)
    );
    assert_eq!(
        count("tcptrace_http_connections_cut_total", "plain_http_on_tls"),
        Some(1.0)
    );
    assert_eq!(
        count(
            "tcptrace_http_connections_cut_total",
            "tls_handshake_failed"
        ),
        Some(1.0)
    );

    // A real Prometheus scrapes over TLS with basic auth; the same target with a wrong
    // password is down.
    let scrape = |job: &str, password: &str| {
        format!(
            "  - job_name: {job}\n    scheme: https\n    tls_config:\n      ca_file: '{ca}'\n    \
             basic_auth:\n      username: prometheus\n      password: '{password}'\n    \
             static_configs:\n      - targets: ['{}']\n",
            serve.addr
        )
    };
    let prometheus = Prometheus::start_with_jobs(&format!(
        "{}{}",
        scrape("tcptrace", "scrape-secret"),
        scrape("tcptrace-wrong-password", "nope")
    ));
    let up = |job: &str| {
        let result = prometheus.query(&format!("up{{job=\"{job}\"}}"));
        result.first().map(|r| r.1)
    };
    eventually(
        WAIT,
        "Prometheus to scrape over TLS with basic auth",
        || (up("tcptrace") == Some(1.0)).then_some(()),
    );
    eventually(WAIT, "the wrong password's target to be down", || {
        (up("tcptrace-wrong-password") == Some(0.0)).then_some(())
    });
    let events = eventually(WAIT, "tcptrace's own series in Prometheus", || {
        let result = prometheus.query("tcptrace_programs_attached");
        (!result.is_empty()).then_some(result)
    });
    assert_eq!(events[0].0["job"], "tcptrace");
    assert_eq!(up("tcptrace"), Some(1.0));
}

#[test]
#[ignore = "needs root"]
fn client_certificates_signed_by_the_client_ca_are_required_or_checked() {
    require_root();
    let pki = Pki::new("web-mtls");
    let (ca, client, client_key, rogue, rogue_key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
        pki.path("rogue.pem"),
        pki.path("rogue.key"),
    );
    let [ca, client, client_key, rogue, rogue_key] =
        [&ca, &client, &client_key, &rogue, &rogue_key].map(|p| p.to_str().unwrap().to_owned());
    for (auth_type, anonymous_allowed) in [
        ("RequireAndVerifyClientCert", false),
        ("VerifyClientCertIfGiven", true),
    ] {
        // Absolute paths this time, and TLS 1.3 only.
        let config = pki.web_config(&format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: {auth_type}\n  \
             client_ca_file: {ca}\n  min_version: TLS13\n",
            pki.path("server.pem").display(),
            pki.path("server.key").display(),
        ));
        let serve = Serve::start(&["-P", "24102", "--web.config.file", config.to_str().unwrap()]);
        let url = https(&serve, "/metrics");
        let with_client = curl(&[
            "--cacert",
            &ca,
            "--cert",
            &client,
            "--key",
            &client_key,
            &url,
        ]);
        assert_eq!(
            with_client.status, 200,
            "{auth_type}: {}",
            with_client.stderr
        );
        let with_rogue = curl(&["--cacert", &ca, "--cert", &rogue, "--key", &rogue_key, &url]);
        assert_eq!(
            with_rogue.status, 0,
            "{auth_type}: a certificate the CA did not sign"
        );
        assert_ne!(with_rogue.exit, 0);
        let anonymous = curl(&["--cacert", &ca, &url]);
        assert_eq!(
            anonymous.status == 200,
            anonymous_allowed,
            "{auth_type}: {}",
            anonymous.stderr
        );
        // TLS 1.2 is below min_version.
        let old = curl(&[
            "--tlsv1.2",
            "--tls-max",
            "1.2",
            "--cacert",
            &ca,
            "--cert",
            &client,
            "--key",
            &client_key,
            &url,
        ]);
        assert_eq!(
            old.status, 0,
            "{auth_type}: TLS 1.2 under min_version TLS13"
        );
    }
}

/// A raw connection that reads until the server closes it, and says when.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut sink = Vec::new();
    let result = stream.read_to_end(&mut sink);
    let took = started.elapsed();
    assert!(
        result.is_ok()
            || matches!(result, Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the server did not close within {limit:?}: {result:?}"
    );
    took
}

#[test]
#[ignore = "needs root"]
fn idle_and_trickling_clients_are_cut_at_their_timeouts() {
    require_root();
    let serve = Serve::start(&[
        "-P",
        "24103",
        "--web.idle-timeout",
        "1500ms",
        "--web.read-header-timeout",
        "1s",
    ]);
    // Connected and silent: closed at the idle timeout.
    let mut idle = TcpStream::connect(serve.addr).unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(5));
    assert!(
        took >= Duration::from_millis(1300) && took < Duration::from_secs(3),
        "idle connection closed after {took:?}"
    );

    // A header trickled a byte every 200 ms: cut a second after its first byte, although
    // bytes keep coming (the idle timeout alone would never fire).
    let mut trickle = TcpStream::connect(serve.addr).unwrap();
    let started = Instant::now();
    let mut cut = None;
    for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if trickle.write_all(&[*byte]).is_err() {
            cut = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        // A write can succeed after the server closed; a read tells.
        trickle.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        let read = trickle.read(&mut buf);
        trickle.set_nonblocking(false).unwrap();
        if matches!(read, Ok(0))
            || matches!(read, Err(ref e) if e.kind() != std::io::ErrorKind::WouldBlock)
        {
            cut = Some(started.elapsed());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(4), "never cut");
    }
    let cut = cut.expect("the trickling header was cut");
    assert!(
        cut >= Duration::from_millis(900) && cut < Duration::from_millis(2500),
        "trickling header cut after {cut:?}"
    );

    // A keep-alive connection: answered, then closed once idle for the idle timeout.
    let mut keep = TcpStream::connect(serve.addr).unwrap();
    write!(keep, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 512];
    let n = keep.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let took = closed_within(&mut keep, Duration::from_secs(5));
    assert!(
        took >= Duration::from_millis(1300) && took < Duration::from_secs(3),
        "keep-alive connection closed {took:?} after its answer"
    );
    // Requests that come whole are answered as ever; each cut is counted.
    let metrics = serve.metrics();
    let cut = |reason: &str| {
        sample(
            &metrics,
            "tcptrace_http_connections_cut_total",
            &format!("reason=\"{reason}\""),
        )
    };
    assert_eq!(cut("idle_timeout"), Some(2.0));
    assert_eq!(cut("header_timeout"), Some(1.0));
    assert_eq!(cut("evicted"), Some(0.0));
}

/// `tcptrace serve --web.config.file PATH` where PATH is bad: exit 1 before anything
/// is loaded, with a message naming the file and the problem. No root needed: nothing
/// is loaded.
fn refused(config: &Path) -> String {
    let out = Command::new(TCPTRACE)
        .args(["serve", "--listen", "127.0.0.1:0", "--web.config.file"])
        .arg(config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}: {stderr}", config.display());
    assert!(!stderr.contains("attached"), "nothing was loaded: {stderr}");
    assert!(
        stderr.contains(&config.display().to_string()),
        "names the file: {stderr}"
    );
    stderr
}

#[test]
fn a_bad_web_config_file_stops_the_start_with_the_reason() {
    let pki = Pki::new("web-bad");
    let hash = bcrypt::hash("pw", 4).unwrap();
    let server = "  cert_file: server.pem\n  key_file: server.key\n";
    let missing = pki.path("absent.yml");
    assert!(refused(&missing).contains("cannot read the web config file"));
    for (yaml, complaint) in [
        // node_exporter's first format, renamed since.
        (format!("tls_config:\n{server}"), "unknown field `tls_config`"),
        (format!("tls_server_config:\n{server}  cert_fiel: x\n"), "unknown field `cert_fiel`"),
        ("tls_server_config: [\n".to_owned(), "line"),
        ("tls_server_config:\n  cert_file: nowhere.pem\n  key_file: server.key\n".into(), "nowhere.pem"),
        ("tls_server_config:\n  cert_file: server.pem\n".into(), "missing one of key or key_file"),
        // The CA's key with the server's certificate.
        ("tls_server_config:\n  cert_file: server.pem\n  key_file: ca.key\n".into(), "do not make a usable pair"),
        ("tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n".into(), "no certificate"),
        ("tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n".into(), "no private key"),
        (format!("tls_server_config:\n{server}  min_version: TLS10\n"), "TLS10 is not supported"),
        (format!("tls_server_config:\n{server}  min_version: TLS13\n  max_version: TLS12\n"), "min_version is above max_version"),
        (format!("tls_server_config:\n{server}  client_auth_type: RequireAnyClientCert\n"), "not supported"),
        (format!("tls_server_config:\n{server}  client_auth_type: Sometimes\n"), "unknown value \"Sometimes\""),
        (format!("tls_server_config:\n{server}  client_ca_file: ca.pem\n"), "without a client_auth_type"),
        (format!("tls_server_config:\n{server}  client_auth_type: RequireAndVerifyClientCert\n"), "needs client_ca_file"),
        (format!("tls_server_config:\n{server}  client_allowed_sans: [prometheus]\n"), "client_allowed_sans is not supported"),
        (format!("tls_server_config:\n{server}  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n"), "TLS_RSA_WITH_AES_128_CBC_SHA"),
        (format!("tls_server_config:\n{server}  curve_preferences: [CurveP521]\n"), "CurveP521"),
        ("basic_auth_users:\n  prometheus: plaintext\n".into(), "not a bcrypt hash"),
        (format!("basic_auth_users:\n  prometheus: {hash}\nhttp_server_config:\n  headers:\n    Server: me\n"), "\"Server\" cannot be set"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: always\n".into(), "X-Frame-Options must be one of deny, sameorigin"),
        ("rate_limit:\n  interval: 1s\n".into(), "rate_limit.burst"),
    ] {
        let config = pki.web_config(&yaml);
        let stderr = refused(&config);
        assert!(stderr.contains(complaint), "{yaml}\n→ {stderr}");
    }
    // `doctor` reports the same without loading anything.
    let config = pki.web_config("basic_auth_users:\n  prometheus: plaintext\n");
    let out = Command::new(TCPTRACE)
        .args(["doctor", "--listen", "127.0.0.1:0", "--web.config.file"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("web config"))
        .expect("a web config line");
    assert!(
        line.contains("FAIL") && line.contains("not a bcrypt hash"),
        "{line}"
    );
    // A good file passes the doctor's check; the rest of the doctor needs root.
    let config = pki.web_config(&format!(
        "tls_server_config:\n{server}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  \
         curve_preferences: [X25519, CurveP256]\nbasic_auth_users:\n  prometheus: {hash}\n"
    ));
    let out = Command::new(TCPTRACE)
        .args(["doctor", "--listen", "127.0.0.1:0", "--web.config.file"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("web config"))
        .expect("a web config line");
    assert!(
        line.contains("  ok  ") && line.contains("TLS on, basic auth for 1 user(s)"),
        "{line}"
    );
    // The --web.* flags on `watch` need --listen.
    let out = Command::new(TCPTRACE)
        .args(["watch", "--web.config.file"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("need --listen"), "{stderr}");
}

#[test]
fn the_readme_web_config_is_accepted() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let example = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("tls_server_config:"))
        .expect("the README shows a web config");
    let pki = Pki::new("web-readme");
    std::fs::copy(pki.path("server.pem"), pki.path("tcptrace.crt")).unwrap();
    std::fs::copy(pki.path("server.key"), pki.path("tcptrace.key")).unwrap();
    let config = pki.web_config(example);
    let out = Command::new(TCPTRACE)
        .args(["doctor", "--listen", "127.0.0.1:0", "--web.config.file"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("web config"))
        .expect("a web config line");
    assert!(
        line.contains("  ok  ") && line.contains("TLS on, basic auth for 1 user(s)"),
        "{line}"
    );
    // Its hash is the password it says.
    let hash = example
        .lines()
        .find_map(|l| l.trim().strip_prefix("prometheus: "))
        .unwrap();
    assert!(bcrypt::verify("change-me", hash).unwrap());
}
