//! Userspace capacity on one core: the ring buffer's records through decode → tracker →
//! metrics, with a detector pass, as `tcptrace serve` runs them.

mod synthetic;

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tcptrace::{
    decode::decode,
    detect::close_wait::find_stuck,
    metrics::{EventRecorder, Metrics},
    tracker::Tracker,
};

const CONNECTIONS: u64 = 100_000;
/// Connections under way at once, as in the churn load.
const CONCURRENCY: u64 = 256;

fn replay(c: &mut Criterion) {
    let records = synthetic::churn(CONNECTIONS, CONCURRENCY);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("replay", |b| {
        b.iter_batched(
            || {
                let metrics = Arc::new(Metrics::new().expect("metrics register"));
                (Tracker::new(65_536, 4096), EventRecorder::new(metrics))
            },
            |(mut tracker, mut recorder)| {
                for record in &records {
                    let event = decode(record).expect("valid records");
                    let applied = tracker.apply(&event);
                    recorder.record(&event, &applied);
                    if let Some(conn) = applied
                        .conn
                        .filter(|_| applied.finished)
                        .and_then(|id| tracker.finished_by_id(id))
                    {
                        recorder.record_finished(conn);
                    }
                }
                recorder.record_table(&tracker);
                black_box(find_stuck(tracker.live(), &[], u64::MAX, 1));
                black_box(tracker.stats())
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
