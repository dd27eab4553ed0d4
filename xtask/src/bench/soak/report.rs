//! The Soak section of BENCHMARKS.md: the criteria with their verdicts, then the whole
//! series.

use std::fmt::Write as _;

use super::{verdict, SoakResults, SoakSample};

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A sample as the run prints it while it goes.
pub(crate) fn one_line(s: &SoakSample) -> String {
    format!(
        "{:>5.0} s: RSS {:.1} MiB, {} tracked, {} evicted, {} events, {} lost, {} missed, \
         {} leaks, {} TIME_WAIT",
        s.at_s,
        mib(s.rss_kib),
        s.tracked,
        s.evictions,
        s.events,
        s.lost,
        s.missed,
        s.leaks,
        s.time_wait
    )
}

fn verdict_word(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

fn series(r: &SoakResults) -> String {
    let mut table = String::from(
        "| t (s) | RSS (MiB) | CPU, % of one core | tracked | evicted | state changes | lost | \
         missed | leaks (`/api/leaks`) | TIME_WAIT |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut previous: Option<&SoakSample> = None;
    for s in &r.samples {
        let cpu = previous
            .filter(|p| s.at_s > p.at_s)
            .map_or("–".to_owned(), |p| {
                format!("{:.1}", 100.0 * (s.cpu_s - p.cpu_s) / (s.at_s - p.at_s))
            });
        let _ = writeln!(
            table,
            "| {:.0} | {:.1} | {cpu} | {} | {} | {} | {} | {} | {} | {} |",
            s.at_s,
            mib(s.rss_kib),
            s.tracked,
            s.evictions,
            s.events,
            s.lost,
            s.missed,
            s.leaks,
            s.time_wait
        );
        previous = Some(s);
    }
    table
}

pub(crate) fn markdown(r: &SoakResults) -> String {
    let duration = humantime::format_duration(std::time::Duration::from_secs_f64(r.duration_s));
    let churn = &r.churn;
    let mut doc = format!(
        "## Soak\n\n\
         Written by `sudo cargo xtask bench {flags}` on {date}, and kept by the other runs \
         until the next soak. For {duration}, in a network namespace the benchmark creates, \
         `tcptrace serve --max-connections={cap} --close-wait-threshold={threshold}s \
         --reconcile-interval={reconcile}s` watched, all at once:\n\n\
         - the churn at peak (2 client and 2 server threads): {connections} connections, \
         {per_second:.0}/s, {errors} errors; each client end is left in TIME_WAIT, the \
         buildup the TIME_WAIT column shows;\n\
         - {leaks} connections leaked in CLOSE_WAIT at the start (the server accepted them, \
         the clients sent a line and closed, the server never closes);\n\
         - {crowd} idle established connections ({crowd_entries} table entries, twice the \
         cap) from the start until {crowd_left:.0} s, which keep the table at its cap: \
         each reconcile adds back the sockets evicted since the one before, evicting \
         others (the evicted column).\n\n\
         Sampled every 10 s, and once more after the load, when a detector pass has run \
         over the final state. Warm-up is the first tenth of the run; RSS is flat when \
         the largest sample of the second half is within 5% (or 1 MiB) of the first after \
         warm-up.\n\n\
         | criterion | measured | |\n|---|---|---|\n",
        flags = r.flags.join(" "),
        date = r.date,
        cap = r.cap,
        threshold = r.close_wait_threshold_s,
        reconcile = r.reconcile_interval_s,
        connections = churn.connections,
        per_second = churn.per_second,
        errors = churn.errors,
        leaks = r.leaks_made,
        crowd = r.crowd,
        crowd_entries = 2 * r.crowd,
        crowd_left = r.crowd_left_s,
    );
    for v in verdict::verdicts(r) {
        let _ = writeln!(
            doc,
            "| {} | {} | {} |",
            v.criterion,
            v.measured,
            verdict_word(v.met)
        );
    }
    let _ = write!(doc, "\n{}\n", series(r));
    doc
}
