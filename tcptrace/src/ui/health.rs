//! tcptrace's own health for the web view's overview: the numbers `/metrics` shows,
//! read from the same registry, so that the page and Prometheus never disagree.

use prometheus::proto::{MetricFamily, MetricType};
use serde::Serialize;

/// One kernel program and whether it is attached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProgramState {
    pub program: String,
    pub attached: bool,
}

/// What `/api/health` answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Health {
    pub version: String,
    /// Events received from the kernel, every kind.
    pub events: u64,
    /// Events the kernel could not deliver (ring buffer full).
    pub events_lost: u64,
    /// Tracepoint hits no program ran for (another BPF program on that CPU).
    pub events_missed: u64,
    pub decode_errors: u64,
    pub tracked_connections: u64,
    pub tracked_connections_limit: u64,
    pub reconcile_failures: u64,
    /// By name.
    pub programs: Vec<ProgramState>,
}

/// The value of a counter or gauge sample.
fn value(family: &MetricFamily, metric: &prometheus::proto::Metric) -> f64 {
    match family.get_field_type() {
        MetricType::COUNTER => metric.get_counter().get_value(),
        MetricType::GAUGE => metric.get_gauge().get_value(),
        _ => 0.0,
    }
}

/// The sum of a family's samples: a counter with labels, summed over them.
fn total(family: &MetricFamily) -> u64 {
    let sum: f64 = family.get_metric().iter().map(|m| value(family, m)).sum();
    sum as u64
}

/// A sample's label.
fn label<'a>(metric: &'a prometheus::proto::Metric, name: &str) -> Option<&'a str> {
    metric
        .get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

impl Health {
    /// From a gather of the registry ([`crate::metrics::Metrics::gather`]). A family
    /// missing (the numbers read at scrape, before their sources exist) reads as 0.
    pub fn from_families(families: &[MetricFamily]) -> Health {
        let mut health = Health::default();
        for family in families {
            let metrics = family.get_metric();
            match family.name() {
                "tcptrace_build_info" => {
                    health.version = metrics
                        .first()
                        .and_then(|m| label(m, "version"))
                        .unwrap_or_default()
                        .to_owned();
                }
                "tcptrace_events_total" => health.events = total(family),
                "tcptrace_events_lost_total" => health.events_lost = total(family),
                "tcptrace_events_missed_total" => health.events_missed = total(family),
                "tcptrace_decode_errors_total" => health.decode_errors = total(family),
                "tcptrace_tracked_connections" => health.tracked_connections = total(family),
                "tcptrace_tracked_connections_limit" => {
                    health.tracked_connections_limit = total(family);
                }
                "tcptrace_reconcile_failures_total" => health.reconcile_failures = total(family),
                "tcptrace_programs_attached" => {
                    health.programs = metrics
                        .iter()
                        .map(|m| ProgramState {
                            program: label(m, "program").unwrap_or_default().to_owned(),
                            attached: value(family, m) >= 1.0,
                        })
                        .collect();
                    health.programs.sort_by(|a, b| a.program.cmp(&b.program));
                }
                _ => {}
            }
        }
        health
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn reads_the_registry_as_a_scrape_does() {
        let metrics = Metrics::new().unwrap();
        metrics.events.with_label_values(&["state"]).inc_by(40);
        metrics.events.with_label_values(&["retransmit"]).inc_by(2);
        metrics.reconcile_failures.inc();
        metrics
            .programs_attached
            .with_label_values(&["tcp_retransmit_skb"])
            .set(0);
        metrics
            .programs_attached
            .with_label_values(&["inet_sock_set_state"])
            .set(1);
        let health = Health::from_families(&metrics.gather());
        assert_eq!(
            health,
            Health {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                events: 42,
                reconcile_failures: 1,
                programs: vec![
                    ProgramState {
                        program: "inet_sock_set_state".into(),
                        attached: true
                    },
                    ProgramState {
                        program: "tcp_retransmit_skb".into(),
                        attached: false
                    },
                ],
                ..Health::default()
            }
        );
    }
}
