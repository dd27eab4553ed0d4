//! The bounded ring of finished timelines, indexed by id and by namespace and 4-tuple so that
//! pairing and printing do not scan it.

use std::{collections::VecDeque, hash::BuildHasher as _};

use hashbrown::HashTable;

use super::{
    connection::{ConnId, Connection, SocketKey},
    packed::PackedKey,
};

/// The indexes hold sequence numbers and hash through the ring's entries (as the live
/// table's do through its slab): 8 bytes an entry, and no 4-tuple hashed twice.
pub(super) struct FinishedRing {
    entries: VecDeque<Connection>,
    capacity: usize,
    /// Sequence number of `entries[0]`; entry `i` has `first_seq + i`.
    first_seq: u64,
    /// By generation, which is unique for the daemon's life.
    by_id: HashTable<u64>,
    /// The latest finished connection with each namespace and 4-tuple (tuples recur
    /// across generations: a port is reused after TIME_WAIT).
    by_key: HashTable<u64>,
    hasher: foldhash::fast::RandomState,
}

impl FinishedRing {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            first_seq: 0,
            by_id: HashTable::new(),
            by_key: HashTable::new(),
            hasher: Default::default(),
        }
    }

    fn entry(entries: &VecDeque<Connection>, first_seq: u64, seq: u64) -> &Connection {
        &entries[(seq - first_seq) as usize]
    }

    pub(super) fn push(&mut self, conn: Connection) {
        if self.capacity == 0 {
            return;
        }
        let Self {
            entries,
            first_seq,
            by_id,
            by_key,
            hasher,
            ..
        } = self;
        if entries.len() == self.capacity {
            let oldest = &entries[0];
            let id_hash = hasher.hash_one(oldest.id.generation);
            if let Ok(found) = by_id.find_entry(id_hash, |&seq| seq == *first_seq) {
                found.remove();
            }
            let key_hash = hasher.hash_one(oldest.packed_key());
            if let Ok(found) = by_key.find_entry(key_hash, |&seq| seq == *first_seq) {
                found.remove();
            }
            entries.pop_front();
            *first_seq += 1;
        }
        let seq = *first_seq + entries.len() as u64;
        let key = conn.packed_key();
        let (generation, key_hash) = (conn.id.generation, hasher.hash_one(key));
        entries.push_back(conn);
        let (entries, first) = (&*entries, *first_seq);
        by_id.insert_unique(hasher.hash_one(generation), seq, |&s| {
            hasher.hash_one(Self::entry(entries, first, s).id.generation)
        });
        // A newer connection with the same tuple replaces the older one's entry.
        match by_key.find_entry(key_hash, |&s| {
            Self::entry(entries, first, s).packed_key() == key
        }) {
            Ok(mut found) => *found.get_mut() = seq,
            Err(_) => {
                by_key.insert_unique(key_hash, seq, |&s| {
                    hasher.hash_one(Self::entry(entries, first, s).packed_key())
                });
            }
        }
    }

    pub(super) fn by_id(&self, id: ConnId) -> Option<&Connection> {
        self.by_generation(id.generation).filter(|c| c.id == id)
    }

    pub(super) fn by_generation(&self, generation: u64) -> Option<&Connection> {
        let seq = self.by_id.find(self.hasher.hash_one(generation), |&s| {
            Self::entry(&self.entries, self.first_seq, s).id.generation == generation
        })?;
        self.at(*seq)
    }

    pub(super) fn by_key(&self, key: SocketKey) -> Option<&Connection> {
        let key = PackedKey::of(&key);
        let seq = self.by_key.find(self.hasher.hash_one(key), |&s| {
            Self::entry(&self.entries, self.first_seq, s).packed_key() == key
        })?;
        self.at(*seq)
    }

    fn at(&self, seq: u64) -> Option<&Connection> {
        self.entries
            .get(usize::try_from(seq.checked_sub(self.first_seq)?).ok()?)
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
