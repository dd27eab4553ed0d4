//! Gauge families whose label sets change (top-K remotes, leaking processes): each
//! update sets the new series and removes the ones that fell out, without a reset
//! that a concurrent scrape could catch half-way.

use std::collections::HashSet;

use prometheus::core::{Atomic, GenericGaugeVec};

/// The label sets a gauge family currently exports.
#[derive(Debug, Default)]
pub struct SeriesSet {
    current: HashSet<Vec<String>>,
}

impl SeriesSet {
    pub fn replace<P: Atomic>(
        &mut self,
        family: &GenericGaugeVec<P>,
        values: impl IntoIterator<Item = (Vec<String>, P::T)>,
    ) {
        let mut next = HashSet::new();
        for (labels, value) in values {
            family.with_label_values(&labels).set(value);
            next.insert(labels);
        }
        for gone in self.current.difference(&next) {
            // Only fails for a wrong label count, which with_label_values would have
            // caught when the series was set.
            let _ = family.remove_label_values(gone);
        }
        self.current = next;
    }
}
