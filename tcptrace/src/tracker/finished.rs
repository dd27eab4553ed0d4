//! The bounded ring of finished timelines, indexed by id and by namespace and 4-tuple so that
//! pairing and printing do not scan it.

use std::collections::VecDeque;

use super::connection::{ConnId, Connection, SocketKey};

pub(super) struct FinishedRing {
    entries: VecDeque<Connection>,
    capacity: usize,
    /// Sequence number of `entries[0]`; entry `i` has `first_seq + i`.
    first_seq: u64,
    /// By generation, which is unique for the daemon's life.
    by_id: super::Map<u64, u64>,
    /// The latest finished connection with each namespace and 4-tuple (tuples recur
    /// across generations: a port is reused after TIME_WAIT).
    by_key: super::Map<SocketKey, u64>,
}

impl FinishedRing {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            first_seq: 0,
            by_id: Default::default(),
            by_key: Default::default(),
        }
    }

    pub(super) fn push(&mut self, conn: Connection) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() == self.capacity {
            let oldest = self.entries.pop_front().expect("full");
            self.by_id.remove(&oldest.id.generation);
            if self.by_key.get(&oldest.key()) == Some(&self.first_seq) {
                self.by_key.remove(&oldest.key());
            }
            self.first_seq += 1;
        }
        let seq = self.first_seq + self.entries.len() as u64;
        self.by_id.insert(conn.id.generation, seq);
        self.by_key.insert(conn.key(), seq);
        self.entries.push_back(conn);
    }

    fn at(&self, seq: u64) -> Option<&Connection> {
        self.entries
            .get(usize::try_from(seq.checked_sub(self.first_seq)?).ok()?)
    }

    pub(super) fn by_id(&self, id: ConnId) -> Option<&Connection> {
        self.by_generation(id.generation).filter(|c| c.id == id)
    }

    pub(super) fn by_generation(&self, generation: u64) -> Option<&Connection> {
        self.at(*self.by_id.get(&generation)?)
    }

    pub(super) fn by_key(&self, key: SocketKey) -> Option<&Connection> {
        self.at(*self.by_key.get(&key)?)
    }

    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = &Connection> {
        self.entries.iter()
    }

    /// The most recent entries first; marks may still be added to them (ids and tuples
    /// are not changed through this).
    pub(super) fn recent_mut(&mut self) -> impl Iterator<Item = &mut Connection> {
        self.entries.iter_mut().rev()
    }
}
