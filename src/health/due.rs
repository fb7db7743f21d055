//! When each of a worker's checked peers is next due, pure: one structure per worker instead of
//! a timer per peer, so a worker wakes once for every peer that is due at about the same time.
//!
//! Entries live in a slab (a place per peer, reused after the peer leaves) and a binary heap
//! orders their due times; the due time lives only in the heap entry. An entry's handle carries
//! a stamp, so a handle of a removed entry never reaches the entry that took its place; each
//! slot also carries a tick, moved on whenever its heap entry goes stale (rescheduled, popped,
//! removed), and the heap drops entries whose tick is old when they come up (no search on
//! removal). An entry popped and rescheduled, as each checked peer is per interval, leaves
//! nothing behind.
//!
//! Which peers a worker watches at all: the ones `home` gives it, so that each peer is watched
//! by one worker (cost per interval O(peers / workers) per worker, not O(peers)).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A handle to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id {
    index: u32,
    stamp: u32,
}

struct Slot<T> {
    value: Option<T>,
    stamp: u32,
    /// The tick of the slot's one valid heap entry (if it has one).
    tick: u32,
}

/// Entries of type `T`, each due at a time (any unit, e.g. nginx's monotonic ms).
pub struct DueQueue<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    len: usize,
}

impl<T> Default for DueQueue<T> {
    fn default() -> Self {
        DueQueue {
            slots: Vec::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            len: 0,
        }
    }
}

impl<T> DueQueue<T> {
    /// Makes room for `additional` more entries.
    pub fn reserve(&mut self, additional: usize) {
        self.slots.reserve(additional);
        self.heap.reserve(additional);
    }

    /// Adds `value`, due at `due`.
    pub fn insert(&mut self, value: T, due: u64) -> Id {
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize].value = Some(value);
                i
            }
            None => {
                self.slots.push(Slot {
                    value: Some(value),
                    stamp: 0,
                    tick: 0,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let stamp = self.slots[index as usize].stamp;
        self.len += 1;
        self.push(index, due);
        Id { index, stamp }
    }

    /// Takes the entry out; `None` when `id` is no longer in the queue.
    pub fn remove(&mut self, id: Id) -> Option<T> {
        let s = self.slots.get_mut(id.index as usize)?;
        if s.stamp != id.stamp || s.value.is_none() {
            return None;
        }
        let value = s.value.take();
        s.stamp = s.stamp.wrapping_add(1);
        s.tick = s.tick.wrapping_add(1);
        self.free.push(id.index);
        self.len -= 1;
        value
    }

    pub fn get(&self, id: Id) -> Option<&T> {
        self.slots
            .get(id.index as usize)
            .filter(|s| s.stamp == id.stamp)
            .and_then(|s| s.value.as_ref())
    }

    pub fn get_mut(&mut self, id: Id) -> Option<&mut T> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|s| s.stamp == id.stamp)
            .and_then(|s| s.value.as_mut())
    }

    /// Makes the entry due at `due` (earlier or later than before).
    pub fn reschedule(&mut self, id: Id, due: u64) {
        match self.slots.get(id.index as usize) {
            Some(s) if s.stamp == id.stamp && s.value.is_some() => self.push(id.index, due),
            _ => {}
        }
    }

    /// The earliest due time of any entry.
    pub fn next_due(&mut self) -> Option<u64> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((due, _, _))| *due)
    }

    /// The entry due earliest, if it is due at `now` or before. It is not due again until it
    /// is rescheduled (the caller reschedules it), so that a caller who forgets cannot spin.
    pub fn pop_due(&mut self, now: u64) -> Option<Id> {
        self.drop_stale();
        let &Reverse((due, index, _)) = self.heap.peek()?;
        if due > now {
            return None;
        }
        self.heap.pop();
        let s = &mut self.slots[index as usize];
        s.tick = s.tick.wrapping_add(1);
        Some(Id {
            index,
            stamp: s.stamp,
        })
    }

    /// Takes every entry out.
    pub fn drain(&mut self) -> Vec<T> {
        self.heap.clear();
        self.free.clear();
        self.len = 0;
        self.slots.drain(..).filter_map(|s| s.value).collect()
    }

    /// Entries in the queue.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes slot `index`'s heap entry the one due at `due` (an older one goes stale).
    fn push(&mut self, index: u32, due: u64) {
        let s = &mut self.slots[index as usize];
        s.tick = s.tick.wrapping_add(1);
        self.heap.push(Reverse((due, index, s.tick)));
        self.shrink_heap();
    }

    fn is_live(&self, &Reverse((_, index, tick)): &Reverse<(u64, u32, u32)>) -> bool {
        let s = &self.slots[index as usize];
        s.tick == tick && s.value.is_some()
    }

    /// Drops stale heap entries from the top.
    fn drop_stale(&mut self) {
        while let Some(top) = self.heap.peek() {
            if self.is_live(top) {
                return;
            }
            self.heap.pop();
        }
    }

    /// Drops every stale heap entry when they outnumber live ones, so that memory stays
    /// proportional to the entries however often they are rescheduled before they are due.
    /// (A tick moves on at most once per push, and there are fewer than 2 × len + 64 pushes
    /// between two of these, so a stale entry is gone long before its tick could come round.)
    fn shrink_heap(&mut self) {
        if self.heap.len() <= 2 * self.len + 64 {
            return;
        }
        let mut heap = core::mem::take(&mut self.heap);
        heap.retain(|e| self.is_live(e));
        self.heap = heap;
    }
}

/// Whether worker `worker` of `workers` watches the peer with record `record`: each record has
/// one home worker; a record private to each worker (`None`) is watched by every worker.
pub fn home(record: Option<usize>, workers: usize, worker: usize) -> bool {
    match record {
        None => true,
        Some(r) => workers <= 1 || r % workers == worker % workers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_due_in_order_and_wait_to_be_rescheduled() {
        let mut q = DueQueue::default();
        let a = q.insert("a", 30);
        let b = q.insert("b", 10);
        let c = q.insert("c", 20);
        assert_eq!(q.next_due(), Some(10));
        assert_eq!(q.pop_due(5), None);
        assert_eq!(q.pop_due(25), Some(b));
        assert_eq!(q.pop_due(25), Some(c));
        assert_eq!(q.pop_due(25), None);
        // Popped but not rescheduled: not due again.
        assert_eq!(q.next_due(), Some(30));
        q.reschedule(b, 40);
        q.reschedule(c, 26);
        assert_eq!(q.pop_due(100), Some(c));
        assert_eq!(q.pop_due(100), Some(a));
        assert_eq!(q.pop_due(100), Some(b));
        assert_eq!(q.get(a), Some(&"a"));
    }

    #[test]
    fn removed_entries_never_come_due_and_their_handles_go_stale() {
        let mut q = DueQueue::default();
        let a = q.insert(1, 10);
        let b = q.insert(2, 20);
        assert_eq!(q.remove(a), Some(1));
        assert_eq!(q.remove(a), None);
        // The place is reused; the old handle does not reach the new entry.
        let c = q.insert(3, 5);
        assert_ne!(a, c);
        assert_eq!(q.get(a), None);
        q.reschedule(a, 1);
        assert_eq!(q.pop_due(100), Some(c));
        assert_eq!(q.pop_due(100), Some(b));
        assert_eq!(q.pop_due(100), None);
        assert_eq!(q.len(), 2);
        let mut all = q.drain();
        all.sort();
        assert_eq!(all, vec![2, 3]);
        assert!(q.is_empty() && q.next_due().is_none() && q.get(b).is_none());
    }

    #[test]
    fn the_heap_stays_proportional_to_the_entries() {
        let mut q = DueQueue::default();
        let ids: Vec<Id> = (0..100).map(|i| q.insert(i, i)).collect();
        for round in 0..1000u64 {
            for id in &ids {
                q.reschedule(*id, 1000 + round);
            }
        }
        assert!(q.heap.len() <= 2 * 100 + 64 + 100, "{}", q.heap.len());
        assert_eq!(q.next_due(), Some(1999));
    }

    #[test]
    fn peers_visited_every_interval_keep_one_heap_entry_each() {
        // What the probe clock does: pop each due entry and reschedule it an interval later.
        let mut q = DueQueue::default();
        let n = 1000u64;
        for i in 0..n {
            q.insert(i, i);
        }
        for now in n..20 * n {
            while let Some(id) = q.pop_due(now) {
                q.reschedule(id, now + n);
            }
        }
        assert!(
            q.heap.len() <= n as usize + 1,
            "{} heap entries",
            q.heap.len()
        );
    }

    #[test]
    fn an_entry_costs_its_value_and_eight_bytes() {
        // Per checked peer, per worker, at 100,000 peers: the slot adds a stamp and a tick (the
        // due time lives in the heap entry only).
        use core::mem::size_of;
        use core::num::NonZeroU64;
        assert_eq!(size_of::<Slot<NonZeroU64>>(), 16);
    }

    #[test]
    fn every_record_has_one_home_worker() {
        for workers in 1..6 {
            for record in 0..50 {
                let homes = (0..workers)
                    .filter(|&w| home(Some(record), workers, w))
                    .count();
                assert_eq!(homes, 1);
            }
            assert!((0..workers).all(|w| home(None, workers, w)));
        }
        assert!(home(Some(7), 0, 0));
    }
}
