//! The deployment files: alert rules and their unit tests (promtool), the systemd unit
//! (systemd-analyze, and its command line against tcptrace's own parser), the README's
//! scrape configuration (promtool), and the Kubernetes manifests (kubernetes-validate
//! against the API schemas, their rules against the rule file, the DaemonSet's command
//! line against tcptrace's parser). No root needed.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use clap::Parser as _;
use common::serve::{deploy_dir, TempDir};
use tcptrace::cli::{Cli, Command as Subcommand, DEFAULT_LISTEN};
use yaml_rust2::{Yaml, YamlLoader};

/// Runs a tool that the set-up installs; its output when it fails.
fn run(program: &str, args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}: run `cargo xtask setup` to install it"))
}

fn assert_clean(what: &str, out: &std::process::Output) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{what} failed:\n{stdout}{stderr}");
    assert!(stderr.trim().is_empty(), "{what} warned:\n{stderr}");
}

#[test]
fn alert_rules_load_and_pass_their_unit_tests() {
    let dir = deploy_dir().join("prometheus");
    let out = run("promtool", &["check", "rules", "tcptrace.rules.yml"], &dir);
    assert_clean("promtool check rules", &out);
    // Every rule in the file loaded, none skipped.
    let rules = std::fs::read_to_string(dir.join("tcptrace.rules.yml")).unwrap();
    let alerts = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The whole line: "19 rules found" contains "9 rules found".
    assert!(
        stdout
            .lines()
            .any(|l| l.trim() == format!("SUCCESS: {alerts} rules found")),
        "{stdout}"
    );
    let out = run(
        "promtool",
        &["test", "rules", "tcptrace.rules.test.yml"],
        &dir,
    );
    assert_clean("promtool test rules", &out);
}

fn exec_start(unit: &str) -> &str {
    unit.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart")
}

#[test]
fn the_systemd_unit_is_valid_and_runs_serve_on_loopback() {
    let unit = std::fs::read_to_string(deploy_dir().join("systemd/tcptrace.service")).unwrap();
    let args: Vec<&str> = exec_start(&unit).split_whitespace().collect();
    assert_eq!(args[0], "/usr/local/bin/tcptrace");
    let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("ExecStart: {e}"));
    let Subcommand::Serve(serve) = cli.command else {
        panic!("ExecStart should run `serve`");
    };
    assert_eq!(serve.listen, DEFAULT_LISTEN.parse().unwrap());
    for capability in ["CAP_BPF", "CAP_PERFMON"] {
        assert!(unit.contains(capability), "{capability}");
    }
    // systemd-analyze checks that the binary exists: point it at the one just built.
    let dir = TempDir::new("unit");
    let installed = unit.replace("/usr/local/bin/tcptrace", env!("CARGO_BIN_EXE_tcptrace"));
    std::fs::write(dir.0.join("tcptrace.service"), installed).unwrap();
    let out = run("systemd-analyze", &["verify", "tcptrace.service"], &dir.0);
    assert_clean("systemd-analyze verify", &out);
}

#[test]
fn the_readme_scrape_config_is_a_valid_prometheus_config() {
    let readme = std::fs::read_to_string(deploy_dir().join("../README.md")).unwrap();
    let config = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("scrape_configs:"))
        .expect("the README shows a scrape config");
    assert!(
        config.contains(DEFAULT_LISTEN),
        "it scrapes the default address"
    );
    let dir = TempDir::new("scrape-config");
    // The README's rule path is relative to where Prometheus runs; mirror it here.
    std::fs::create_dir_all(dir.0.join("rules")).unwrap();
    std::fs::copy(
        deploy_dir().join("prometheus/tcptrace.rules.yml"),
        dir.0.join("rules/tcptrace.rules.yml"),
    )
    .unwrap();
    std::fs::write(dir.0.join("prometheus.yml"), config).unwrap();
    let out = run("promtool", &["check", "config", "prometheus.yml"], &dir.0);
    assert!(
        out.status.success(),
        "promtool check config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where `cargo xtask setup` installs kubernetes-validate: a virtualenv in the
/// workspace (`KUBERNETES_VALIDATE_VENV` in xtask/src/setup.rs).
fn kubernetes_validate() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let path = workspace.join("target/kubernetes-validate/bin/kubernetes-validate");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask setup` to install it",
        path.display()
    );
    path
}

/// The oldest and the newest Kubernetes that kubernetes-validate 1.37.0 has schemas for.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.32.0", "1.37.0"];

/// Every manifest in deploy/kubernetes/.
fn kubernetes_files() -> Vec<PathBuf> {
    let dir = deploy_dir().join("kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    files
}

/// The resources in one file (empty documents are not resources).
fn resources(file: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(file).unwrap();
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

fn all_resources() -> Vec<Yaml> {
    kubernetes_files()
        .iter()
        .flat_map(|f| resources(f))
        .collect()
}

fn find<'a>(resources: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    resources
        .iter()
        .find(|r| r["kind"].as_str() == Some(kind) && r["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("deploy/kubernetes/ has no {kind} {name}"))
}

fn strings(list: &Yaml) -> Vec<&str> {
    list.as_vec()
        .map(|items| {
            items
                .iter()
                .map(|i| i.as_str().expect("a string"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_kubernetes_manifests_match_the_api_schemas() {
    let validator = kubernetes_validate();
    for file in kubernetes_files() {
        let mut args = vec!["--strict"];
        for version in KUBERNETES_VERSIONS {
            args.extend(["-k", version]);
        }
        let name = file.file_name().unwrap().to_str().unwrap();
        args.push(name);
        let out = run(validator.to_str().unwrap(), &args, file.parent().unwrap());
        let what = format!("kubernetes-validate {name}");
        assert_clean(&what, &out);
        // It exits 0 after a WARN for a kind it has no schema for (a CRD): only a pass
        // of every resource against every version will do.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let passes = stdout
            .lines()
            .filter(|l| l.starts_with("INFO ") && l.contains(" passed for resource "))
            .count();
        let expected = resources(&file).len() * KUBERNETES_VERSIONS.len();
        assert!(
            passes == expected && stdout.lines().count() == passes,
            "{what}: {passes} passes of {expected} (each resource, each version):\n{stdout}"
        );
    }
}

#[test]
fn the_kubernetes_config_map_holds_the_alert_rules_unchanged() {
    let resources = all_resources();
    let config_map = find(&resources, "ConfigMap", "tcptrace-rules");
    let embedded = config_map["data"]["tcptrace.rules.yml"]
        .as_str()
        .expect("the ConfigMap has data tcptrace.rules.yml");
    let file = std::fs::read_to_string(deploy_dir().join("prometheus/tcptrace.rules.yml")).unwrap();
    if embedded != file {
        let (line, (ours, theirs)) = embedded
            .split_inclusive('\n')
            .chain(std::iter::repeat(""))
            .zip(file.split_inclusive('\n').chain(std::iter::repeat("")))
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .expect("they differ somewhere");
        panic!(
            "the ConfigMap's rules differ from deploy/prometheus/tcptrace.rules.yml at line \
             {}:\n  ConfigMap: {ours:?}\n  file:      {theirs:?}\ncopy the file into the \
             ConfigMap, indented by four spaces",
            line + 1
        );
    }
}

#[test]
fn the_daemon_set_runs_serve_on_the_node_address_with_only_its_capabilities() {
    let resources = all_resources();
    let pod = &find(&resources, "DaemonSet", "tcptrace")["spec"]["template"];
    let spec = &pod["spec"];
    assert_eq!(spec["hostPID"].as_bool(), Some(true), "hostPID");
    assert_eq!(spec["hostNetwork"].as_bool(), Some(true), "hostNetwork");
    let container = &spec["containers"][0];

    // Kubernetes expands $(NODE_IP) in args from the container's env.
    let node_ip = container["env"]
        .as_vec()
        .and_then(|env| env.iter().find(|e| e["name"].as_str() == Some("NODE_IP")))
        .expect("env NODE_IP");
    assert_eq!(
        node_ip["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("status.hostIP"),
        "NODE_IP is the node's address"
    );
    let example_node_ip = "192.0.2.7";
    let argv: Vec<String> = strings(&container["command"])
        .into_iter()
        .chain(strings(&container["args"]))
        .map(|a| a.replace("$(NODE_IP)", example_node_ip))
        .collect();
    assert!(
        !argv.iter().any(|a| a.contains("$(")),
        "unexpanded: {argv:?}"
    );
    assert_eq!(argv[0], "/usr/local/bin/tcptrace");
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("the DaemonSet's args: {e}"));
    let Subcommand::Serve(serve) = cli.command else {
        panic!("the DaemonSet should run `serve`");
    };
    assert_eq!(
        serve.listen,
        SocketAddr::new(example_node_ip.parse().unwrap(), 9977)
    );

    // Prometheus, the probes and the Service all use the port it listens on.
    let port = serve.listen.port();
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/port"].as_str(),
        Some(port.to_string().as_str())
    );
    assert_eq!(container["ports"][0]["name"].as_str(), Some("metrics"));
    assert_eq!(
        container["ports"][0]["containerPort"].as_i64(),
        Some(port.into())
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some("/healthz"), "{probe}");
        assert_eq!(get["port"].as_str(), Some("metrics"), "{probe}");
    }
    let service = &find(&resources, "Service", "tcptrace")["spec"];
    assert_eq!(service["clusterIP"].as_str(), Some("None"), "headless");
    assert_eq!(service["ports"][0]["targetPort"].as_str(), Some("metrics"));

    // Not privileged: every capability dropped but the ones tcptrace uses.
    let security = &container["securityContext"];
    assert_eq!(security["privileged"].as_bool(), Some(false));
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    let mut added = strings(&security["capabilities"]["add"]);
    added.sort_unstable();
    assert_eq!(
        added,
        [
            "BPF",
            "DAC_READ_SEARCH",
            "PERFMON",
            "SYS_ADMIN",
            "SYS_PTRACE",
            "SYS_RESOURCE"
        ]
    );
}
