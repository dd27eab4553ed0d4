//! Owners shared between connections: a host's connections belong to few processes
//! (a server's accepted sockets all inherit its listener's owner), so each connection
//! holds an 8-byte `Arc` to one copy instead of 40 bytes of its own.
//!
//! Bounded: at most [`MAX_INTERNED`] owners are remembered for sharing. When full, those
//! no connection holds any more are forgotten; while every remembered one is still held,
//! a new owner gets a copy of its own (correct, only not shared). Forgetting costs a
//! pass over the table, done at most once per `MAX_INTERNED / 2` new owners.

use std::{hash::BuildHasher as _, sync::Arc};

use hashbrown::HashTable;

use super::connection::Owner;

/// Owners remembered for sharing (8 bytes each in the table, plus 48 per `Arc` while
/// no connection holds it).
pub(super) const MAX_INTERNED: usize = 4096;

#[derive(Default)]
pub(super) struct Owners {
    interned: HashTable<Arc<Owner>>,
    hasher: foldhash::fast::RandomState,
    /// New owners since the last time the unheld ones were forgotten.
    new_since_prune: usize,
}

impl Owners {
    /// The shared copy of `owner`, made and remembered when new.
    pub(super) fn intern(&mut self, owner: Owner) -> Arc<Owner> {
        let hash = self.hasher.hash_one(owner);
        if let Some(shared) = self.interned.find(hash, |o| **o == owner) {
            return Arc::clone(shared);
        }
        self.new_since_prune += 1;
        if self.interned.len() >= MAX_INTERNED && self.new_since_prune >= MAX_INTERNED / 2 {
            self.interned.retain(|o| Arc::strong_count(o) > 1);
            self.new_since_prune = 0;
        }
        let shared = Arc::new(owner);
        if self.interned.len() < MAX_INTERNED {
            let hasher = &self.hasher;
            self.interned
                .insert_unique(hash, Arc::clone(&shared), |o| hasher.hash_one(**o));
        }
        shared
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.interned.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Comm;

    fn owner(pid: u32) -> Owner {
        Owner {
            pid,
            comm: Comm(*b"app\0\0\0\0\0\0\0\0\0\0\0\0\0"),
            cgroup_id: 1,
        }
    }

    #[test]
    fn the_same_owner_is_one_shared_copy() {
        let mut owners = Owners::default();
        let a = owners.intern(owner(1));
        let b = owners.intern(owner(1));
        let c = owners.intern(owner(2));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!((*a, *c), (owner(1), owner(2)));
        assert_eq!(owners.len(), 2);
        // The table's reference, a's and b's.
        assert_eq!(Arc::strong_count(&a), 3);
    }

    #[test]
    fn interning_is_bounded_and_forgets_only_owners_no_one_holds() {
        let mut owners = Owners::default();
        let mut held: Vec<Arc<Owner>> = (0..MAX_INTERNED as u32)
            .map(|pid| owners.intern(owner(pid)))
            .collect();
        assert_eq!(owners.len(), MAX_INTERNED);
        // Full, and every one held: the prune forgets nothing, and a new owner gets a
        // copy of its own, right but not shared.
        let first = MAX_INTERNED as u32;
        let late = owners.intern(owner(first));
        let again = owners.intern(owner(first));
        assert_eq!((*late, *again), (owner(first), owner(first)));
        assert!(!Arc::ptr_eq(&late, &again));
        assert_eq!(owners.len(), MAX_INTERNED);
        // Still shared for those remembered.
        assert!(Arc::ptr_eq(&owners.intern(owner(7)), &held[7]));
        // Released by their connections: forgotten at the next prune, which comes
        // once MAX_INTERNED / 2 new owners have been seen since the last (two so far).
        held.drain(..100);
        for pid in 1..MAX_INTERNED as u32 / 2 - 1 {
            owners.intern(owner(first + pid));
            assert_eq!(owners.len(), MAX_INTERNED);
        }
        let remembered = owners.intern(owner(first + 5_000));
        assert_eq!(owners.len(), MAX_INTERNED - 100 + 1);
        assert!(Arc::ptr_eq(
            &owners.intern(owner(first + 5_000)),
            &remembered
        ));
        assert!(Arc::ptr_eq(&owners.intern(owner(100)), &held[0]));
    }
}
