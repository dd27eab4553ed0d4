//! The Grafana dashboard file as the tests read it: its panels and their queries, its
//! variables, the series selectors and ranges inside a PromQL expression, and the
//! expression Grafana sends once it has put in the variables' values.

use serde_json::Value;

use crate::common::serve::deploy_dir;

/// What every panel, target and query variable names as its datasource: the
/// dashboard's datasource variable, so that an import asks for no datasource uid.
pub(crate) const DATASOURCE: &str = "${datasource}";

/// The variables a query may use: the dashboard's own and Grafana's interval ones.
pub(crate) const KNOWN_VARIABLES: &[&str] =
    &["instance", "namespace", "__rate_interval", "__range"];

pub(crate) fn load() -> Value {
    let path = deploy_dir().join("grafana/tcptrace.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, with the panels inside collapsed rows.
pub(crate) fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("a panels list") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

/// One PromQL target of one panel.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "panel {:?} target {}: {}",
            self.panel, self.ref_id, self.expr
        )
    }
}

/// Every panel's targets, in the order of the file.
pub(crate) fn queries(dashboard: &Value) -> Vec<Query> {
    panels(dashboard)
        .into_iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|panel| {
            let title = panel["title"].as_str().expect("every panel has a title");
            panel["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("panel {title:?} has no targets"))
                .iter()
                .map(move |t| Query {
                    panel: title.to_owned(),
                    ref_id: t["refId"].as_str().unwrap_or_default().to_owned(),
                    expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                })
        })
        .collect()
}

/// The target `ref_id` of the panel titled `title`; panics if there is none, so that a
/// renamed panel fails the test instead of skipping its check.
pub(crate) fn query(dashboard: &Value, title: &str, ref_id: &str) -> Query {
    queries(dashboard)
        .into_iter()
        .find(|q| q.panel == title && q.ref_id == ref_id)
        .unwrap_or_else(|| panic!("the dashboard has no panel {title:?} with a target {ref_id}"))
}

/// The template variable `name`.
pub(crate) fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    dashboard["templating"]["list"]
        .as_array()
        .expect("a templating list")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("the dashboard has no variable {name:?}"))
}

/// A query variable's `label_values(SELECTOR, LABEL)`, as (selector, label).
pub(crate) fn label_values_query(variable: &Value) -> (String, String) {
    let query = variable["query"]["query"]
        .as_str()
        .or_else(|| variable["query"].as_str())
        .unwrap_or_else(|| panic!("variable {} has no query", variable["name"]));
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(SELECTOR, LABEL): {query}"));
    let (selector, label) = inner
        .rsplit_once(',')
        .unwrap_or_else(|| panic!("label_values without a selector: {query}"));
    (selector.trim().to_owned(), label.trim().to_owned())
}

/// One label matcher of a series selector: `label op "value"`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Matcher {
    pub label: String,
    pub op: String,
    pub value: String,
}

/// A series selector: the metric name (from `__name__` when it is not written before
/// the braces; empty for a regex on it) and its matchers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Selector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
}

impl Selector {
    pub(crate) fn matcher(&self, label: &str) -> Option<&Matcher> {
        self.matchers.iter().find(|m| m.label == label)
    }
}

/// Metric names a selector can start with: tcptrace's own, and Prometheus's `up`.
fn is_metric(identifier: &str) -> bool {
    identifier.starts_with("tcptrace_") || identifier == "up"
}

/// Every series selector in `expr`: `name{…}`, `{…}`, and a bare metric name (which then
/// has no matchers). Identifiers that are functions, aggregations or `by` labels are
/// skipped; so is the text of string literals.
pub(crate) fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i = string_literal(&chars, i).1;
        } else if c == '{' {
            let (matchers, end) = matchers(&chars, i);
            let metric = matchers
                .iter()
                .find(|m| m.label == "__name__" && m.op == "=")
                .map(|m| m.value.clone())
                .unwrap_or_default();
            found.push(Selector { metric, matchers });
            i = end;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next] == ' ' {
                next += 1;
            }
            if chars.get(next) == Some(&'{') {
                let (matchers, end) = matchers(&chars, next);
                found.push(Selector {
                    metric: name,
                    matchers,
                });
                i = end;
            } else if is_metric(&name) {
                found.push(Selector {
                    metric: name,
                    matchers: Vec::new(),
                });
            }
        } else {
            i += 1;
        }
    }
    found
}

/// The string literal starting at `chars[open]` (a `"`), unescaped, and the index after
/// its closing quote.
fn string_literal(chars: &[char], open: usize) -> (String, usize) {
    let mut value = String::new();
    let mut i = open + 1;
    while i < chars.len() && chars[i] != '"' {
        if chars[i] == '\\' && i + 1 < chars.len() {
            i += 1;
        }
        value.push(chars[i]);
        i += 1;
    }
    assert!(i < chars.len(), "an unterminated string in {chars:?}");
    (value, i + 1)
}

/// The matchers between `chars[open]` (a `{`) and its `}`, and the index after it.
fn matchers(chars: &[char], open: usize) -> (Vec<Matcher>, usize) {
    let mut found = Vec::new();
    let mut i = open + 1;
    loop {
        while i < chars.len() && (chars[i] == ' ' || chars[i] == ',') {
            i += 1;
        }
        assert!(i < chars.len(), "an unterminated selector");
        if chars[i] == '}' {
            return (found, i + 1);
        }
        let start = i;
        while chars[i].is_ascii_alphanumeric() || chars[i] == '_' {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        while chars[i] == ' ' {
            i += 1;
        }
        let op_start = i;
        while matches!(chars[i], '=' | '!' | '~') {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().collect();
        while chars[i] == ' ' {
            i += 1;
        }
        assert_eq!(chars[i], '"', "matcher {label}{op} without a quoted value");
        let (value, end) = string_literal(chars, i);
        found.push(Matcher { label, op, value });
        i = end;
    }
}

/// The text of every `[…]` range in `expr`.
pub(crate) fn ranges(expr: &str) -> Vec<&str> {
    expr.split('[')
        .skip(1)
        .map(|rest| rest.split(']').next().unwrap_or_default())
        .collect()
}

/// The name of every `$variable` in `expr`.
pub(crate) fn variables_used(expr: &str) -> Vec<&str> {
    expr.split('$')
        .skip(1)
        .map(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// The values Grafana puts in for the variables: `instance` and `namespace` as the
/// regexes it writes into `=~` matchers (already escaped for a PromQL string), the
/// intervals as a dashboard over the last few minutes, scraped every second, has them.
pub(crate) struct Values {
    pub instance: String,
    pub namespace: String,
}

impl Values {
    /// `expr` as Grafana sends it; panics if a variable is left over.
    pub(crate) fn substitute(&self, expr: &str) -> String {
        let sent = expr
            .replace("$__rate_interval", "15s")
            .replace("$__range", "5m")
            .replace("$instance", &self.instance)
            .replace("$namespace", &self.namespace);
        assert!(!sent.contains('$'), "a variable left in {sent}");
        sent
    }
}

/// A literal value as Grafana escapes it for a regex matcher in PromQL: `.` is `\.` in
/// the regex, and that backslash is doubled in the PromQL string.
pub(crate) fn regex_literal(value: &str) -> String {
    value.replace('.', "\\\\.")
}
