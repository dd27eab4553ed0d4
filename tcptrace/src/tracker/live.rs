//! The live connections: slab storage and the indexes that find them, each index
//! holding only a slot number (4 bytes a bucket) and hashing through the slab.
//!
//! Two slabs: connections bound to a kernel address (seen by an event), and unbound
//! ones (seen only by sock_diag, keyed by namespace and 4-tuple until their next event
//! names their address). Indexes:
//! - `by_skaddr`: every bound connection, by kernel address (the per-event lookup);
//! - `by_key`: bound connections whose local port is known, by namespace and 4-tuple
//!   (pairing ends); the latest inserted wins a key two share (a stale entry whose
//!   →CLOSE was lost and its successor);
//! - `unbound_by_key`: every unbound connection (one per key);
//! - `by_generation`: every connection, by its opaque id, as a [`Tagged`] slot.

use std::hash::{BuildHasher as _, Hash};

use hashbrown::HashTable;

use super::{
    connection::{Connection, SocketKey},
    packed::PackedKey,
    slab::Slab,
};
use crate::state::TcpState;

/// A slot in the bound slab, or (top bit set) in the unbound one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Tagged(u32);

const UNBOUND: u32 = 1 << 31;

impl Tagged {
    fn bound(slot: u32) -> Self {
        Self(slot)
    }

    fn unbound(slot: u32) -> Self {
        Self(slot | UNBOUND)
    }

    fn split(self) -> (bool, u32) {
        (self.0 & UNBOUND != 0, self.0 & !UNBOUND)
    }
}

#[derive(Default)]
pub(super) struct LiveTable {
    bound: Slab<Connection>,
    unbound: Slab<Connection>,
    by_skaddr: HashTable<u32>,
    by_key: HashTable<u32>,
    unbound_by_key: HashTable<u32>,
    by_generation: HashTable<Tagged>,
    hasher: foldhash::fast::RandomState,
}

/// The hash of what an index is keyed by, given the hasher.
fn hash_of(hasher: &foldhash::fast::RandomState, value: impl Hash) -> u64 {
    hasher.hash_one(value)
}

fn in_slab(slab: &Slab<Connection>, slot: u32) -> &Connection {
    slab.get(slot).expect("indexes name occupied slots")
}

impl LiveTable {
    pub(super) fn len(&self) -> usize {
        self.bound.len() + self.unbound.len()
    }

    fn bound_slot(&self, skaddr: u64) -> Option<u32> {
        let bound = &self.bound;
        self.by_skaddr
            .find(hash_of(&self.hasher, skaddr), |&s| {
                in_slab(bound, s).id.skaddr == skaddr
            })
            .copied()
    }

    pub(super) fn get(&self, skaddr: u64) -> Option<&Connection> {
        self.bound.get(self.bound_slot(skaddr)?)
    }

    pub(super) fn get_mut(&mut self, skaddr: u64) -> Option<&mut Connection> {
        let slot = self.bound_slot(skaddr)?;
        self.bound.get_mut(slot)
    }

    pub(super) fn contains(&self, skaddr: u64) -> bool {
        self.bound_slot(skaddr).is_some()
    }

    /// The bound connection with `key`, once its port is known.
    pub(super) fn bound_by_key(&self, key: &SocketKey) -> Option<&Connection> {
        let key = PackedKey::of(key);
        let bound = &self.bound;
        let slot = self.by_key.find(hash_of(&self.hasher, key), |&s| {
            in_slab(bound, s).packed_key() == key
        })?;
        bound.get(*slot)
    }

    pub(super) fn unbound_by_key(&self, key: &SocketKey) -> Option<&Connection> {
        self.unbound.get(self.unbound_slot(&PackedKey::of(key))?)
    }

    fn unbound_slot(&self, key: &PackedKey) -> Option<u32> {
        // Usually empty once the seeded sockets are bound: every opening event asks, so
        // skip the key's packing and hashing then.
        if self.unbound.len() == 0 {
            return None;
        }
        let unbound = &self.unbound;
        self.unbound_by_key
            .find(hash_of(&self.hasher, key), |&s| {
                in_slab(unbound, s).packed_key() == *key
            })
            .copied()
    }

    pub(super) fn by_generation(&self, generation: u64) -> Option<&Connection> {
        let (bound, unbound) = (&self.bound, &self.unbound);
        let tagged = self
            .by_generation
            .find(hash_of(&self.hasher, generation), |&t| {
                self.at(t).id.generation == generation
            })?;
        match tagged.split() {
            (false, slot) => bound.get(slot),
            (true, slot) => unbound.get(slot),
        }
    }

    fn at(&self, tagged: Tagged) -> &Connection {
        match tagged.split() {
            (false, slot) => in_slab(&self.bound, slot),
            (true, slot) => in_slab(&self.unbound, slot),
        }
    }

    fn index_generation(&mut self, generation: u64, tagged: Tagged) {
        let (bound, unbound, hasher) = (&self.bound, &self.unbound, &self.hasher);
        let at = |t: Tagged| match t.split() {
            (false, slot) => in_slab(bound, slot),
            (true, slot) => in_slab(unbound, slot),
        };
        self.by_generation
            .insert_unique(hash_of(hasher, generation), tagged, |&t| {
                hash_of(hasher, at(t).id.generation)
            });
    }

    fn unindex_generation(&mut self, generation: u64, tagged: Tagged) {
        if let Ok(entry) = self
            .by_generation
            .find_entry(hash_of(&self.hasher, generation), |&t| t == tagged)
        {
            entry.remove();
        }
    }

    /// Indexes `slot` (bound) by its key, replacing what another slot had there.
    fn index_key(&mut self, slot: u32) {
        let (bound, hasher) = (&self.bound, &self.hasher);
        let key = in_slab(bound, slot).packed_key();
        let hash = hash_of(hasher, key);
        match self.by_key.entry(
            hash,
            |&s| in_slab(bound, s).packed_key() == key,
            |&s| hash_of(hasher, in_slab(bound, s).packed_key()),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut entry) => *entry.get_mut() = slot,
            hashbrown::hash_table::Entry::Vacant(entry) => {
                entry.insert(slot);
            }
        }
    }

    /// Drops the key index's entry for `slot` (bound), if it holds the key.
    fn unindex_key(&mut self, slot: u32) {
        let key = in_slab(&self.bound, slot).packed_key();
        if let Ok(entry) = self
            .by_key
            .find_entry(hash_of(&self.hasher, key), |&s| s == slot)
        {
            entry.remove();
        }
    }

    /// Adds a bound connection, replacing the one at its address (callers retire
    /// that one first: this only keeps the indexes right if they did not).
    pub(super) fn insert_bound(&mut self, conn: Connection) -> &mut Connection {
        if let Some(slot) = self.bound_slot(conn.id.skaddr) {
            self.remove_bound_slot(slot);
        }
        let (skaddr, generation) = (conn.id.skaddr, conn.id.generation);
        let port_known = conn.local_port() != 0;
        let slot = self.bound.insert(conn);
        let (bound, hasher) = (&self.bound, &self.hasher);
        self.by_skaddr
            .insert_unique(hash_of(hasher, skaddr), slot, |&s| {
                hash_of(hasher, in_slab(bound, s).id.skaddr)
            });
        if port_known {
            self.index_key(slot);
        }
        self.index_generation(generation, Tagged::bound(slot));
        self.bound.get_mut(slot).expect("just inserted")
    }

    pub(super) fn remove_bound(&mut self, skaddr: u64) -> Option<Connection> {
        let slot = self.bound_slot(skaddr)?;
        Some(self.remove_bound_slot(slot))
    }

    fn remove_bound_slot(&mut self, slot: u32) -> Connection {
        let conn = in_slab(&self.bound, slot);
        let (skaddr, generation) = (conn.id.skaddr, conn.id.generation);
        if let Ok(entry) = self
            .by_skaddr
            .find_entry(hash_of(&self.hasher, skaddr), |&s| s == slot)
        {
            entry.remove();
        }
        self.unindex_key(slot);
        self.unindex_generation(generation, Tagged::bound(slot));
        self.bound.remove(slot).expect("occupied")
    }

    /// Adds an unbound connection, replacing the one with its key.
    pub(super) fn insert_unbound(&mut self, conn: Connection) {
        let key = conn.packed_key();
        if let Some(slot) = self.unbound_slot(&key) {
            self.remove_unbound_slot(slot);
        }
        let generation = conn.id.generation;
        let slot = self.unbound.insert(conn);
        let (unbound, hasher) = (&self.unbound, &self.hasher);
        self.unbound_by_key
            .insert_unique(hash_of(hasher, key), slot, |&s| {
                hash_of(hasher, in_slab(unbound, s).packed_key())
            });
        self.index_generation(generation, Tagged::unbound(slot));
    }

    pub(super) fn remove_unbound(&mut self, key: &SocketKey) -> Option<Connection> {
        let slot = self.unbound_slot(&PackedKey::of(key))?;
        Some(self.remove_unbound_slot(slot))
    }

    fn remove_unbound_slot(&mut self, slot: u32) -> Connection {
        let conn = in_slab(&self.unbound, slot);
        let (key, generation) = (conn.packed_key(), conn.id.generation);
        if let Ok(entry) = self
            .unbound_by_key
            .find_entry(hash_of(&self.hasher, key), |&s| s == slot)
        {
            entry.remove();
        }
        self.unindex_generation(generation, Tagged::unbound(slot));
        self.unbound.remove(slot).expect("occupied")
    }

    /// Removes the connection in `tagged`'s slot (from [`Self::eviction_order`]).
    pub(super) fn remove_tagged(&mut self, tagged: Tagged) -> Connection {
        match tagged.split() {
            (false, slot) => self.remove_bound_slot(slot),
            (true, slot) => self.remove_unbound_slot(slot),
        }
    }

    /// Sets the local address of the bound connection at `skaddr`, keeping the key
    /// index in step: it then holds this connection under its new key.
    pub(super) fn set_local(&mut self, skaddr: u64, local: std::net::SocketAddr) {
        let Some(slot) = self.bound_slot(skaddr) else {
            return;
        };
        self.unindex_key(slot);
        self.bound
            .get_mut(slot)
            .expect("found above")
            .set_local(local);
        self.index_key(slot);
    }

    /// Every connection's slot with the key eviction orders by: CLOSE_WAIT last, then
    /// the least recently active first. A leaked CLOSE_WAIT socket is by nature the
    /// least active entry there is; evicted, it would come back at the next reconcile
    /// as first seen then, its age reset, and a table kept full would hide every leak.
    pub(super) fn eviction_order(&self) -> Vec<((bool, u64), Tagged)> {
        let key = |c: &Connection| (c.state() == TcpState::CloseWait, c.last_activity_ns);
        self.bound
            .iter()
            .map(|(slot, c)| (key(c), Tagged::bound(slot)))
            .chain(
                self.unbound
                    .iter()
                    .map(|(slot, c)| (key(c), Tagged::unbound(slot))),
            )
            .collect()
    }

    /// Bound connections, then unbound ones.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.bound().chain(self.unbound())
    }

    pub(super) fn bound(&self) -> impl Iterator<Item = &Connection> {
        self.bound.iter().map(|(_, c)| c)
    }

    pub(super) fn unbound(&self) -> impl Iterator<Item = &Connection> {
        self.unbound.iter().map(|(_, c)| c)
    }

    /// Every connection, to change what no index is keyed by (states, times).
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Connection> {
        self.bound.values_mut().chain(self.unbound.values_mut())
    }

    /// Entries in the id index: exactly the live connections.
    #[cfg(test)]
    pub(super) fn id_index_len(&self) -> usize {
        self.by_generation.len()
    }

    /// Entries in the key index of bound connections: never more than they are.
    #[cfg(test)]
    pub(super) fn key_index_len(&self) -> usize {
        self.by_key.len()
    }

    /// Entries in the address and unbound key indexes: every bound connection, and
    /// every unbound one.
    #[cfg(test)]
    pub(super) fn slot_index_lens(&self) -> (usize, usize) {
        (self.by_skaddr.len(), self.unbound_by_key.len())
    }

    /// Where the connection with `generation` is stored.
    #[cfg(test)]
    pub(super) fn tagged_of(&self, generation: u64) -> Option<Tagged> {
        self.by_generation
            .find(hash_of(&self.hasher, generation), |&t| {
                self.at(t).id.generation == generation
            })
            .copied()
    }

    /// Slots allocated in both slabs, occupied or not.
    #[cfg(test)]
    pub(super) fn slab_capacity(&self) -> usize {
        self.bound.capacity() + self.unbound.capacity()
    }
}
