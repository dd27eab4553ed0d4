//! Reads the ring buffer when the kernel says it is readable (epoll through tokio's
//! `AsyncFd`) and every [`DRAIN_EVERY`], decodes, and sends batches down a bounded
//! channel. The kernel wakes the reader only once `WAKEUP_BYTES` wait (a wakeup per
//! event costs the traced task ~3 µs); the timer collects what arrives more slowly.
//!
//! When the consumer falls behind, the channel fills, this task waits, the ring buffer
//! fills and the kernel counts what it could not store: losses are visible in one place.

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Arc,
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::mpsc,
    task::JoinHandle,
};

use super::ProbeError;
use crate::{decode::decode, event::TcpEvent};

/// Events are sent in batches: one channel operation per wake-up, not per event.
pub type EventBatch = Vec<TcpEvent>;

/// The largest batch, so a consumer sees events while a burst is still being read.
const MAX_BATCH: usize = 4096;

/// What the reader has seen, readable from anywhere while it runs.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Records decoded, by `tcptrace_common::kind` (index 0 unused).
    pub events_by_kind: [AtomicU64; tcptrace_common::kind::MAX as usize + 1],
    /// Records that failed to decode and were skipped.
    pub decode_errors: AtomicU64,
}

impl PipelineStats {
    pub fn events(&self) -> u64 {
        self.events_by_kind.iter().map(|c| c.load(Relaxed)).sum()
    }
}

pub fn spawn_reader(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<EventBatch>,
    stats: Arc<PipelineStats>,
) -> JoinHandle<Result<(), ProbeError>> {
    tokio::spawn(read_loop(ring, tx, stats))
}

/// The kind byte of a record that decoded, so a valid index into `events_by_kind`.
fn kind_index(bytes: &[u8]) -> usize {
    usize::from(bytes[std::mem::offset_of!(tcptrace_common::Event, kind)])
}

/// How long an event may wait in the ring buffer on a quiet host.
pub const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

async fn read_loop(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<EventBatch>,
    stats: Arc<PipelineStats>,
) -> Result<(), ProbeError> {
    // SAFETY: the RingBuf owns its map fd and returns the same open fd for as long as
    // it lives, which is as long as the AsyncFd that owns it.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| ProbeError::Io(e.into()))?;
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                // Cleared before draining: data that arrives meanwhile notifies again.
                guard?.clear_ready();
            }
            _ = tick.tick() => {}
        }
        if !drain(fd.get_mut(), &tx, &stats).await {
            return Ok(());
        }
    }
}

/// Reads everything in the ring buffer; false once the consumer is gone.
async fn drain(
    ring: &mut RingBuf<MapData>,
    tx: &mpsc::Sender<EventBatch>,
    stats: &PipelineStats,
) -> bool {
    let mut batch = Vec::new();
    while let Some(item) = ring.next() {
        match decode(&item) {
            Ok(event) => {
                stats.events_by_kind[kind_index(&item)].fetch_add(1, Relaxed);
                batch.push(event);
            }
            Err(err) => {
                if stats.decode_errors.fetch_add(1, Relaxed) == 0 {
                    log::warn!("skipping an undecodable ring buffer record: {err}");
                }
            }
        }
        drop(item);
        if batch.len() == MAX_BATCH && tx.send(std::mem::take(&mut batch)).await.is_err() {
            return false;
        }
    }
    batch.is_empty() || tx.send(batch).await.is_ok()
}
