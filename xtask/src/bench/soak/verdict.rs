//! What a soak must show, judged from its results alone (so `--report-only` judges a
//! stored run the same way).

use super::SoakResults;

/// RSS may rise by this share of its value after warm-up...
const RSS_SLACK_RATIO: f64 = 0.05;
/// ...or by this much, whichever is more (allocator noise on a small heap).
const RSS_SLACK_KIB: u64 = 1024;

/// One criterion and how the run did on it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Verdict {
    pub criterion: &'static str,
    pub measured: String,
    pub met: bool,
}

/// The samples after warm-up (the first tenth of the run): the RSS baseline is the
/// first of them.
pub(crate) fn warm_up_s(results: &SoakResults) -> f64 {
    results.duration_s / 10.0
}

fn lost(results: &SoakResults) -> Verdict {
    let last = results.samples.last().copied().unwrap_or_default();
    Verdict {
        criterion: "0 events lost",
        measured: format!(
            "{} lost (ring buffer full), {} missed (another BPF program on the CPU), of {} \
             state changes",
            last.lost, last.missed, last.events
        ),
        met: last.lost == 0 && !results.samples.is_empty(),
    }
}

fn leak_count(results: &SoakResults) -> Verdict {
    let at_end = results.samples.last().map_or(0, |s| s.leaks);
    Verdict {
        criterion: "leak count right at the end",
        measured: format!(
            "`/api/leaks` {at_end}, `ss state close-wait` {}, leaks made {}",
            results.ss_close_wait, results.leaks_made
        ),
        met: at_end == results.leaks_made && results.ss_close_wait == results.leaks_made,
    }
}

/// The leak counts the detector showed while the crowd kept the table over its cap,
/// from the first sample at which a leak could have been counted.
fn leaks_under_pressure(results: &SoakResults) -> Vec<u64> {
    let countable_from = results.close_wait_threshold_s + 2.0 * results.reconcile_interval_s;
    results
        .samples
        .iter()
        .filter(|s| s.at_s >= countable_from && s.at_s < results.crowd_left_s)
        .map(|s| s.leaks)
        .collect()
}

/// The table evicts its least recently active entries, which a leak always is: only
/// because eviction spares CLOSE_WAIT does the count stay right while the table is full.
fn leak_count_under_pressure(results: &SoakResults) -> Verdict {
    let counts = leaks_under_pressure(results);
    let (least, most) = (
        counts.iter().min().copied().unwrap_or(0),
        counts.iter().max().copied().unwrap_or(0),
    );
    Verdict {
        criterion: "leak count right while the table is over its cap",
        measured: if counts.is_empty() {
            "no sample while the table was over its cap after the threshold: run longer".to_owned()
        } else {
            format!(
                "{least}–{most} of {} in {} samples",
                results.leaks_made,
                counts.len()
            )
        },
        met: !counts.is_empty() && least == results.leaks_made && most == results.leaks_made,
    }
}

/// The first sample after warm-up, and the largest of the second half.
pub(crate) fn rss_baseline_and_peak(results: &SoakResults) -> Option<(u64, u64)> {
    let warm = warm_up_s(results);
    let baseline = results.samples.iter().find(|s| s.at_s >= warm)?.rss_kib;
    let peak = results
        .samples
        .iter()
        .filter(|s| s.at_s >= results.duration_s / 2.0)
        .map(|s| s.rss_kib)
        .max()?;
    Some((baseline, peak))
}

fn rss_flat(results: &SoakResults) -> Verdict {
    let Some((baseline, peak)) = rss_baseline_and_peak(results) else {
        return Verdict {
            criterion: "RSS flat after warm-up",
            measured: "too few samples".into(),
            met: false,
        };
    };
    let slack = ((baseline as f64 * RSS_SLACK_RATIO) as u64).max(RSS_SLACK_KIB);
    Verdict {
        criterion: "RSS flat after warm-up",
        measured: format!(
            "{:.1} MiB after warm-up ({:.0} s), at most {:.1} MiB in the second half \
             ({:+.1}%; allowed: +5% or +1 MiB)",
            baseline as f64 / 1024.0,
            warm_up_s(results),
            peak as f64 / 1024.0,
            100.0 * (peak as f64 - baseline as f64) / baseline as f64
        ),
        met: peak <= baseline + slack,
    }
}

fn capped(results: &SoakResults) -> Verdict {
    let most = results.samples.iter().map(|s| s.tracked).max().unwrap_or(0);
    let evictions = results.samples.last().map_or(0, |s| s.evictions);
    Verdict {
        criterion: "tracked connections within the cap, the cap reached",
        measured: format!(
            "at most {most} tracked, cap {}; {evictions} evicted",
            results.cap
        ),
        met: most <= results.cap && evictions > 0,
    }
}

pub(crate) fn verdicts(results: &SoakResults) -> Vec<Verdict> {
    vec![
        lost(results),
        leak_count(results),
        leak_count_under_pressure(results),
        rss_flat(results),
        capped(results),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::soak::SoakSample;

    fn run(rss: &[u64]) -> SoakResults {
        SoakResults {
            duration_s: 100.0,
            cap: 100,
            leaks_made: 5,
            ss_close_wait: 5,
            close_wait_threshold_s: 5.0,
            reconcile_interval_s: 2.5,
            crowd_left_s: 25.0,
            samples: rss
                .iter()
                .enumerate()
                .map(|(i, &rss_kib)| SoakSample {
                    at_s: 10.0 * i as f64,
                    rss_kib,
                    tracked: 100,
                    evictions: 7,
                    leaks: 5,
                    ..SoakSample::default()
                })
                .collect(),
            ..SoakResults::default()
        }
    }

    #[test]
    fn a_healthy_run_meets_every_criterion() {
        let results = run(&[10_000, 30_000, 30_500, 30_200, 31_000, 31_400, 31_500]);
        for verdict in verdicts(&results) {
            assert!(verdict.met, "{verdict:?}");
        }
        // The warm-up (10 s of 100) is over at the second sample.
        assert_eq!(rss_baseline_and_peak(&results), Some((30_000, 31_500)));
    }

    #[test]
    fn memory_that_keeps_growing_is_not_flat() {
        let results = run(&[30_000, 30_000, 31_000, 32_000, 33_000, 34_000]);
        assert!(!rss_flat(&results).met);
        // Below 1 MiB of growth is noise on a small heap.
        let small = run(&[5_000, 5_000, 5_500, 5_900, 6_000, 6_000]);
        assert!(rss_flat(&small).met);
    }

    #[test]
    fn losses_a_wrong_leak_count_or_an_unreached_cap_fail() {
        let mut results = run(&[1, 1, 1]);
        results.samples[2].lost = 1;
        assert!(!lost(&results).met);
        let mut results = run(&[1, 1, 1]);
        results.samples[2].leaks = 4;
        assert!(!leak_count(&results).met);
        let mut results = run(&[1, 1, 1]);
        results.ss_close_wait = 6;
        assert!(!leak_count(&results).met);
        // At 10 s and 20 s the crowd holds the table over its cap: those count.
        let mut results = run(&[1, 1, 1]);
        assert!(leak_count_under_pressure(&results).met);
        results.samples[1].leaks = 0;
        assert!(!leak_count_under_pressure(&results).met);
        let mut results = run(&[1, 1, 1]);
        results.crowd_left_s = 5.0;
        assert!(
            !leak_count_under_pressure(&results).met,
            "no sample under pressure proves nothing"
        );
        let mut results = run(&[1, 1, 1]);
        results.samples[1].tracked = 101;
        assert!(!capped(&results).met);
        let mut results = run(&[1, 1, 1]);
        results.samples[2].evictions = 0;
        assert!(
            !capped(&results).met,
            "a cap never reached was not exercised"
        );
    }
}
