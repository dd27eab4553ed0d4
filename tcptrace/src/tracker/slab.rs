//! Segmented slab storage: values in fixed-size chunks, named by a `u32` slot number,
//! vacant slots chained into a free list through themselves.
//!
//! Segmented so that growing never copies the table nor holds two copies of it at once
//! (a `Vec` doubling at 1M connections would briefly need 3× the memory), and a slot
//! number stays valid for as long as its value is in the slab.

/// Slots per chunk: 1,024 × ~136 bytes, small enough that the last, partly used chunk
/// wastes little at any table size.
const CHUNK_SLOTS: usize = 1024;

/// No next vacant slot.
const NONE: u32 = u32::MAX;

enum Slot<T> {
    Occupied(T),
    /// The next vacant slot (`NONE` at the end of the list).
    Vacant(u32),
}

pub(super) struct Slab<T> {
    chunks: Vec<Vec<Slot<T>>>,
    /// The most recently vacated slot: reused first.
    free_head: u32,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            free_head: NONE,
            len: 0,
        }
    }
}

fn place(slot: u32) -> (usize, usize) {
    let slot = slot as usize;
    (slot / CHUNK_SLOTS, slot % CHUNK_SLOTS)
}

impl<T> Slab<T> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Stores `value`; its slot number.
    ///
    /// # Panics
    /// When the slab already holds `u32::MAX` values (the table's cap is a `u32`).
    pub(super) fn insert(&mut self, value: T) -> u32 {
        self.len += 1;
        if self.free_head != NONE {
            let slot = self.free_head;
            let (chunk, i) = place(slot);
            let entry = &mut self.chunks[chunk][i];
            let Slot::Vacant(next) = *entry else {
                unreachable!("the free list holds only vacant slots")
            };
            self.free_head = next;
            *entry = Slot::Occupied(value);
            return slot;
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK_SLOTS) {
            self.chunks.push(Vec::with_capacity(CHUNK_SLOTS));
        }
        let chunk_index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[chunk_index];
        let slot = chunk_index * CHUNK_SLOTS + chunk.len();
        chunk.push(Slot::Occupied(value));
        u32::try_from(slot)
            .ok()
            .filter(|&s| s != NONE)
            .expect("at most u32::MAX - 1 slots")
    }

    /// Takes the value out of `slot`; the slot is reused by a later insert.
    pub(super) fn remove(&mut self, slot: u32) -> Option<T> {
        let (chunk, i) = place(slot);
        let entry = self.chunks.get_mut(chunk)?.get_mut(i)?;
        if matches!(entry, Slot::Vacant(_)) {
            return None;
        }
        let Slot::Occupied(value) = std::mem::replace(entry, Slot::Vacant(self.free_head)) else {
            unreachable!("checked above")
        };
        self.free_head = slot;
        self.len -= 1;
        Some(value)
    }

    pub(super) fn get(&self, slot: u32) -> Option<&T> {
        let (chunk, i) = place(slot);
        match self.chunks.get(chunk)?.get(i)? {
            Slot::Occupied(value) => Some(value),
            Slot::Vacant(_) => None,
        }
    }

    pub(super) fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        let (chunk, i) = place(slot);
        match self.chunks.get_mut(chunk)?.get_mut(i)? {
            Slot::Occupied(value) => Some(value),
            Slot::Vacant(_) => None,
        }
    }

    /// Occupied slots and their values, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(slot, entry)| match entry {
                Slot::Occupied(value) => Some((slot as u32, value)),
                Slot::Vacant(_) => None,
            })
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.chunks
            .iter_mut()
            .flatten()
            .filter_map(|entry| match entry {
                Slot::Occupied(value) => Some(value),
                Slot::Vacant(_) => None,
            })
    }

    /// Slots allocated, occupied or not: what the slab costs.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vacated_slot_is_reused_before_the_slab_grows() {
        let mut slab = Slab::default();
        let slots: Vec<u32> = (0..5).map(|v| slab.insert(v)).collect();
        assert_eq!(slots, [0, 1, 2, 3, 4]);
        assert_eq!(slab.remove(1), Some(1));
        assert_eq!(slab.remove(3), Some(3));
        assert_eq!(slab.remove(3), None, "already vacant");
        assert_eq!(slab.len(), 3);
        // Last vacated, first reused.
        assert_eq!(slab.insert(30), 3);
        assert_eq!(slab.insert(10), 1);
        assert_eq!(slab.insert(5), 5);
        assert_eq!(slab.get(1), Some(&10));
        assert_eq!(slab.get(3), Some(&30));
        assert_eq!(
            slab.iter().map(|(s, v)| (s, *v)).collect::<Vec<_>>(),
            [(0, 0), (1, 10), (2, 2), (3, 30), (4, 4), (5, 5)]
        );
        assert_eq!(slab.get(6), None);
        assert_eq!(slab.remove(CHUNK_SLOTS as u32 * 7), None);
    }

    #[test]
    fn it_grows_a_chunk_at_a_time_and_values_never_move() {
        let mut slab = Slab::default();
        for v in 0..CHUNK_SLOTS as u64 {
            slab.insert(v);
        }
        assert_eq!(slab.capacity(), CHUNK_SLOTS);
        let first: *const u64 = slab.get(0).unwrap();
        assert_eq!(slab.insert(u64::MAX), CHUNK_SLOTS as u32);
        assert_eq!(slab.capacity(), 2 * CHUNK_SLOTS);
        assert_eq!(slab.len(), CHUNK_SLOTS + 1);
        assert!(
            std::ptr::eq(first, slab.get(0).unwrap()),
            "no copy on growth"
        );
        for value in slab.values_mut() {
            *value = value.wrapping_add(1);
        }
        assert_eq!(
            slab.get(CHUNK_SLOTS as u32 - 1),
            Some(&(CHUNK_SLOTS as u64))
        );
        assert_eq!(slab.get(CHUNK_SLOTS as u32), Some(&0), "wrapped");
    }
}
