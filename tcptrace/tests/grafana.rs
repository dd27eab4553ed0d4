//! The Grafana dashboard, `deploy/grafana/tcptrace.json`.
//!
//! Without root, its structure: unique panel ids and a layout without overlaps, the
//! datasource a variable everywhere, the `instance` and `namespace` variables, every
//! series selector filtered by `$instance` (and by `$namespace` where it has the label),
//! no hard-coded instance or range, and a README section that names every row.
//!
//! As root, the queries: a real `tcptrace serve`, scraped every second by a real
//! Prometheus, watches a scenario that gives every panel something to show
//! (`grafana/scenario.rs`). Every panel's PromQL, the variables put in as Grafana puts
//! them, must parse and return at least one series; the variables' own queries must list
//! the instance and the scenario's namespaces; some panels must show exactly what the
//! scenario made; and the dashboard must use every metric tcptrace exports, and no other.

mod common;
#[path = "grafana/dashboard.rs"]
mod dashboard;
#[path = "grafana/scenario.rs"]
mod scenario;

use std::{
    collections::{BTreeSet, HashSet},
    time::{Duration, Instant},
};

use common::{
    netns::NetnsPair,
    require_root,
    serve::{deploy_dir, url_encode, Prometheus, Serve},
};
use dashboard::{Query, Values, DATASOURCE};
use scenario::Scenario;
use serde_json::{json, Value};

/// How long after the scenario everything must have been seen: long enough for a few
/// reconciles, scrapes and `rate()` windows, and shorter than TIME_WAIT (60 s,
/// `TCP_TIMEWAIT_LEN`), whose sockets some panels must still show.
const WAIT: Duration = Duration::from_secs(45);

fn datasource() -> Value {
    json!({ "type": "prometheus", "uid": DATASOURCE })
}

#[test]
fn the_selector_reader_finds_every_selector_and_matcher() {
    let expr = r#"histogram_quantile(0.5, sum by (le) (rate(tcptrace_a_bucket{instance=~"$instance", netns!~"x\"}"}[$__rate_interval]))) / on (instance) group_left tcptrace_b + up {job="j"} + {__name__="tcptrace_c"} + label_replace(x, "container", "(host)", "container", "")"#;
    let found = dashboard::selectors(expr);
    let matcher = |label: &str, op: &str, value: &str| dashboard::Matcher {
        label: label.to_owned(),
        op: op.to_owned(),
        value: value.to_owned(),
    };
    assert_eq!(
        found,
        vec![
            dashboard::Selector {
                metric: "tcptrace_a_bucket".to_owned(),
                matchers: vec![
                    matcher("instance", "=~", "$instance"),
                    matcher("netns", "!~", "x\"}"),
                ],
            },
            dashboard::Selector {
                metric: "tcptrace_b".to_owned(),
                matchers: vec![],
            },
            dashboard::Selector {
                metric: "up".to_owned(),
                matchers: vec![matcher("job", "=", "j")],
            },
            dashboard::Selector {
                metric: "tcptrace_c".to_owned(),
                matchers: vec![matcher("__name__", "=", "tcptrace_c")],
            },
        ]
    );
    assert_eq!(dashboard::ranges(expr), vec!["$__rate_interval"]);
    assert_eq!(
        dashboard::variables_used(expr),
        vec!["instance", "__rate_interval"]
    );
}

/// The panels' rectangles: inside the 24-column grid, none over another.
fn assert_layout(panels: &[&Value]) {
    let rects: Vec<(&str, [u64; 4])> = panels
        .iter()
        .map(|p| {
            let pos = &p["gridPos"];
            let field = |name: &str| {
                pos[name]
                    .as_u64()
                    .unwrap_or_else(|| panic!("panel {} has no gridPos.{name}", p["title"]))
            };
            let rect = [field("x"), field("y"), field("w"), field("h")];
            assert!(
                rect[0] + rect[2] <= 24,
                "panel {} is wider than the grid",
                p["title"]
            );
            (p["title"].as_str().unwrap(), rect)
        })
        .collect();
    for (i, (a, [ax, ay, aw, ah])) in rects.iter().enumerate() {
        for (b, [bx, by, bw, bh]) in &rects[i + 1..] {
            let apart = ax + aw <= *bx || bx + bw <= *ax || ay + ah <= *by || by + bh <= *ay;
            assert!(apart, "panels {a:?} and {b:?} overlap");
        }
    }
}

/// One query's selectors, ranges and variables, as the structure test requires them.
fn assert_parameterised(query: &Query) {
    assert!(!query.expr.trim().is_empty(), "{query}: no expression");
    let selectors = dashboard::selectors(&query.expr);
    assert!(!selectors.is_empty(), "{query}: no series selector");
    for selector in &selectors {
        assert!(
            selector.metric.starts_with("tcptrace_") || selector.metric == "up",
            "{query}: selects {:?}, not a tcptrace metric",
            selector.metric
        );
        let instances: Vec<_> = selector
            .matchers
            .iter()
            .filter(|m| m.label == "instance")
            .collect();
        assert!(
            instances.len() == 1 && instances[0].op == "=~" && instances[0].value == "$instance",
            "{query}: {} must be filtered by instance=~\"$instance\" and nothing else",
            selector.metric
        );
        if let Some(netns) = selector.matcher("netns") {
            assert_eq!(
                (netns.op.as_str(), netns.value.as_str()),
                ("=~", "$namespace"),
                "{query}"
            );
        }
        for matcher in &selector.matchers {
            assert!(
                !matcher.value.contains(':'),
                "{query}: a hard-coded endpoint {:?}",
                matcher.value
            );
        }
    }
    for range in dashboard::ranges(&query.expr) {
        assert!(
            ["$__rate_interval", "$__range"].contains(&range),
            "{query}: a hard-coded range [{range}]"
        );
    }
    for variable in dashboard::variables_used(&query.expr) {
        assert!(
            dashboard::KNOWN_VARIABLES.contains(&variable),
            "{query}: unknown variable ${variable}"
        );
    }
}

#[test]
fn the_dashboard_is_one_importable_file_parameterised_by_its_variables() {
    let d = dashboard::load();
    assert!(
        d["schemaVersion"].as_u64().unwrap() >= 39,
        "Grafana's JSON model, schema 39+"
    );
    assert_eq!(d["uid"], "tcptrace");
    assert!(
        d["id"].is_null(),
        "an exported dashboard carries no database id"
    );

    let panels = dashboard::panels(&d);
    let mut ids = HashSet::new();
    for panel in &panels {
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {} has no id", panel["title"]));
        assert!(ids.insert(id), "panel id {id} is used twice");
    }
    assert_layout(&dashboard::panels(&d));

    let mut charts = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        charts += 1;
        let title = &panel["title"];
        assert_eq!(panel["datasource"], datasource(), "panel {title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        let mut ref_ids = HashSet::new();
        for target in targets {
            assert_eq!(target["datasource"], datasource(), "panel {title}");
            assert!(
                ref_ids.insert(target["refId"].as_str().unwrap()),
                "panel {title}"
            );
        }
    }
    let queries = dashboard::queries(&d);
    assert!(queries.len() >= charts);
    for query in &queries {
        assert_parameterised(query);
    }

    let source = dashboard::variable(&d, "datasource");
    assert_eq!(source["type"], "datasource");
    assert_eq!(source["query"], "prometheus");
    for (name, label) in [("instance", "instance"), ("namespace", "netns")] {
        let variable = dashboard::variable(&d, name);
        assert_eq!(variable["type"], "query", "{name}");
        assert_eq!(variable["datasource"], datasource(), "{name}");
        assert_eq!(variable["multi"], true, "{name}");
        assert_eq!(variable["includeAll"], true, "{name}");
        // Nothing chosen in the file: Grafana picks from what the import's Prometheus has.
        assert_eq!(variable["current"], json!({}), "{name}");
        assert_eq!(variable["options"], json!([]), "{name}");
        let (selector, queried) = dashboard::label_values_query(variable);
        assert_eq!(queried, label, "{name}");
        assert_eq!(variable["definition"], variable["query"]["query"], "{name}");
        let selectors = dashboard::selectors(&selector);
        assert_eq!(selectors.len(), 1, "{name}: {selector}");
        for matcher in &selectors[0].matchers {
            assert!(!matcher.value.contains(':'), "{name}: {selector}");
        }
    }
    let (selector, _) = dashboard::label_values_query(dashboard::variable(&d, "namespace"));
    let namespaces = &dashboard::selectors(&selector)[0];
    assert_eq!(
        namespaces.matcher("instance").map(|m| m.value.as_str()),
        Some("$instance"),
        "the namespaces of the chosen instances"
    );

    let text = std::fs::read_to_string(deploy_dir().join("grafana/tcptrace.json")).unwrap();
    for literal in ["127.0.0.1", "localhost", ":9977"] {
        assert!(
            !text.contains(literal),
            "the file names an instance: {literal}"
        );
    }
}

#[test]
fn the_readme_section_names_the_file_every_row_and_variable() {
    let readme = std::fs::read_to_string(deploy_dir().join("../README.md")).unwrap();
    let section = readme
        .split("\n## Grafana dashboard\n")
        .nth(1)
        .expect("a README section \"## Grafana dashboard\"");
    let section = section.split("\n## ").next().unwrap();
    assert!(section.contains("deploy/grafana/tcptrace.json"));
    let d = dashboard::load();
    for row in dashboard::panels(&d).iter().filter(|p| p["type"] == "row") {
        let title = row["title"].as_str().unwrap();
        assert!(
            section.contains(title),
            "the README does not name the row {title:?}"
        );
    }
    for variable in ["datasource", "instance", "namespace"] {
        assert!(
            section.contains(&format!("`{variable}`")),
            "the README does not name the variable {variable}"
        );
    }
}

/// The instant query's result vector; panics, naming the panel, if it does not parse.
fn answer(prometheus: &Prometheus, query: &Query, values: &Values) -> Vec<Value> {
    let sent = values.substitute(&query.expr);
    let (status, answer) = prometheus.api(&format!("/api/v1/query?query={}", url_encode(&sent)));
    assert!(
        status == 200 && answer["status"] == "success",
        "{query}\nsent: {sent}\nPrometheus answered {status}: {answer}"
    );
    assert_eq!(answer["data"]["resultType"], "vector", "{query}: {answer}");
    answer["data"]["result"].as_array().unwrap().clone()
}

/// A variable's values, as Grafana asks for them (`match[]` on the label values API).
fn variable_values(prometheus: &Prometheus, d: &Value, name: &str, values: &Values) -> Vec<String> {
    let (selector, label) = dashboard::label_values_query(dashboard::variable(d, name));
    let selector = values.substitute(&selector);
    let (status, answer) = prometheus.api(&format!(
        "/api/v1/label/{label}/values?match%5B%5D={}",
        url_encode(&selector)
    ));
    assert!(
        status == 200 && answer["status"] == "success",
        "variable {name}: {answer}"
    );
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// A panel target showing a series with these labels (and this value, if given).
struct Shows {
    panel: &'static str,
    ref_id: &'static str,
    labels: Vec<(&'static str, String)>,
    value: Option<f64>,
}

fn expectations(scenario: &Scenario) -> Vec<Shows> {
    let (a, b) = (
        scenario.client_netns.to_string(),
        scenario.server_netns.to_string(),
    );
    let queue = vec![("netns", b.clone()), ("listen", scenario.queue.to_string())];
    let leak_remote = format!("127.0.0.1:{}", scenario::LEAK_PORT);
    let shows = |panel, ref_id, labels, value| Shows {
        panel,
        ref_id,
        labels,
        value,
    };
    // Totals are of the scenario's ports only (tcptrace is told -P for each).
    vec![
        shows(
            "Stuck CLOSE_WAIT",
            "A",
            vec![],
            Some(scenario::LEAKS as f64),
        ),
        shows(
            "Stuck CLOSE_WAIT by process",
            "A",
            vec![
                ("pid", scenario.leaker.pid().to_string()),
                ("comm", "python3".to_owned()),
            ],
            Some(scenario::LEAKS as f64),
        ),
        shows(
            "TIME_WAIT by network namespace",
            "A",
            vec![("netns", b.clone())],
            Some(scenario::TIME_WAIT as f64),
        ),
        shows(
            "TIME_WAIT by remote endpoint",
            "A",
            vec![("netns", b.clone()), ("remote", leak_remote)],
            Some(scenario::TIME_WAIT as f64),
        ),
        shows("Accept queue fill", "A", queue.clone(), Some(1.0)),
        shows(
            "Accept queue length and limit",
            "A",
            queue.clone(),
            Some(f64::from(scenario::BACKLOG + 1)),
        ),
        shows(
            "Accept queue length and limit",
            "B",
            queue,
            Some(f64::from(scenario::BACKLOG)),
        ),
        shows("Listen overflows and drops", "A", vec![("netns", b)], None),
        shows("Half-open suspects", "A", vec![], Some(1.0)),
        shows(
            "Half-open suspects by namespace",
            "A",
            vec![("netns", a)],
            Some(1.0),
        ),
        shows(
            "Connect failures",
            "A",
            vec![("reason", "refused".to_owned())],
            None,
        ),
        shows(
            "Close kinds over the time range",
            "A",
            vec![("kind", "refused".to_owned())],
            None,
        ),
        shows(
            "Resets",
            "A",
            vec![
                ("direction", "received".to_owned()),
                ("state", "syn_sent".to_owned()),
            ],
            None,
        ),
        shows(
            "Retransmitted skbs",
            "A",
            vec![("kind", "data".to_owned()), ("outcome", "sent".to_owned())],
            None,
        ),
    ]
}

/// Metric families in a `/metrics` text, and those of them whose series carry `netns`.
fn families(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let all = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    let with_netns = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("netns=\""))
        .map(|l| l.split('{').next().unwrap().to_owned())
        .collect();
    (all, with_netns)
}

/// A selector's metric as its family: a histogram's `_bucket` series are the family's.
fn family_of(metric: &str, exported: &BTreeSet<String>) -> String {
    metric
        .strip_suffix("_bucket")
        .filter(|family| exported.contains(*family))
        .unwrap_or(metric)
        .to_owned()
}

#[test]
#[ignore = "needs root"]
fn every_panel_query_returns_series_from_a_real_prometheus_watching_a_real_scenario() {
    require_root();
    let d = dashboard::load();
    let pair = NetnsPair::create("tt-grafana", 71);
    let ports: Vec<String> = scenario::PORTS.iter().map(u16::to_string).collect();
    let mut args = vec![
        "--close-wait-threshold",
        scenario::CLOSE_WAIT_THRESHOLD,
        "--half-open-after",
        scenario::HALF_OPEN_AFTER,
        "--reconcile-interval",
        "200ms",
        // Every namespace with a listener gets its own series, whatever else runs here.
        "--top-remotes",
        "100",
    ];
    for port in &ports {
        args.extend(["-P", port.as_str()]);
    }
    let serve = Serve::start(&args);
    let prometheus = Prometheus::start(&[serve.addr]);
    let scenario = Scenario::run(&pair);
    let values = Values {
        instance: dashboard::regex_literal(&serve.addr.to_string()),
        namespace: format!("({}|{})", scenario.client_netns, scenario.server_netns),
    };

    let deadline = Instant::now() + WAIT;

    // The variables list this tcptrace, and the scenario's namespaces.
    loop {
        let instances = variable_values(&prometheus, &d, "instance", &values);
        let namespaces = variable_values(&prometheus, &d, "namespace", &values);
        let expected = [scenario.client_netns, scenario.server_netns].map(|n| n.to_string());
        if instances == [serve.addr.to_string()] && expected.iter().all(|n| namespaces.contains(n))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the variables never listed instance {} and namespaces {expected:?}: \
             instance {instances:?}, namespace {namespaces:?}",
            serve.addr
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Every target parses and returns at least one series.
    let queries = dashboard::queries(&d);
    loop {
        let empty: Vec<String> = queries
            .iter()
            .filter(|q| answer(&prometheus, q, &values).is_empty())
            .map(|q| format!("  {q}\n    sent: {}", values.substitute(&q.expr)))
            .collect();
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} queries returned no series:\n{}",
            empty.len(),
            queries.len(),
            empty.join("\n")
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // The panels show what the scenario made.
    for shows in expectations(&scenario) {
        let query = dashboard::query(&d, shows.panel, shows.ref_id);
        loop {
            let series = answer(&prometheus, &query, &values);
            let shown = series.iter().any(|s| {
                shows
                    .labels
                    .iter()
                    .all(|(k, v)| s["metric"][k] == v.as_str())
                    && shows.value.is_none_or(|value| {
                        s["value"][1].as_str().and_then(|v| v.parse().ok()) == Some(value)
                    })
            });
            if shown {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{query} never showed {:?} = {:?}; it shows {series:#?}",
                shows.labels,
                shows.value
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    // The dashboard uses every metric tcptrace exports and no other (but `up`), and
    // filters by namespace exactly the metrics that have one.
    let (exported, with_netns) = families(&serve.metrics());
    let mut used = BTreeSet::new();
    for query in &queries {
        for selector in dashboard::selectors(&query.expr) {
            let family = family_of(&selector.metric, &exported);
            assert!(
                exported.contains(&family) || family == "up",
                "{query}: tcptrace exports no {family}"
            );
            assert_eq!(
                selector.matcher("netns").is_some(),
                with_netns.contains(&selector.metric),
                "{query}: {} must be filtered by namespace exactly when it has the label",
                selector.metric
            );
            used.insert(family);
        }
    }
    let unused: Vec<&String> = exported.difference(&used).collect();
    assert!(unused.is_empty(), "metrics no panel shows: {unused:?}");
}
