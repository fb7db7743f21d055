//! The table of peer records in the shared zone, and how a configured peer finds its record.
//!
//! A record is keyed by upstream name and peer address, not by position, so that after a reload
//! a peer that kept its upstream and address gets its old record (its failures, counters and,
//! later, health) while new peers get fresh ones. Records are handed out in order from the
//! first (the ones in use stay together, and the pages of the rest are never touched); an
//! index beside them finds a key's record by open addressing with linear probing.
//! The nginx master claims records while it loads a configuration, before that configuration's
//! workers exist; workers only ever touch the records they were handed.

use core::hash::BuildHasherDefault;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::collections::HashSet;

use crate::balance::membership::KeyHasher;

use super::added::AddedPeer;
use super::peer::PeerShared;

/// Identifies the zone's layout; a zone that does not carry it is rebuilt.
pub const MAGIC: u64 = u64::from_le_bytes(*b"ngxlbtb1");
/// Bumped whenever `PeerShared`, `Header` or the table's layout change shape.
pub const LAYOUT_VERSION: u32 = 10;
/// How long a record released by a resolved address stays reserved for it (its workers may
/// not all have seen the change, and the address may come back with its health).
pub const RELEASE_GRACE_MS: u64 = 60_000;

/// Start of the table in the zone; the records follow it.
#[repr(C, align(64))]
pub struct Header {
    pub magic: u64,
    pub version: u32,
    pub capacity: u32,
    pub record_size: u32,
    /// Configuration generation, bumped on every (re)load that uses the table.
    pub generation: u32,
    /// Rows of per-worker active counters (besides the shared overflow row).
    pub slots: u32,
    /// Bumped whenever an operator changes a weight (`lb_api`) or a peer's `lb_slow_start`
    /// ramp starts (`Upstream::ramp_started`): workers compare it per request and rebuild
    /// their selection state when it moved.
    pub weights: AtomicU32,
    /// Entries for peers added through `lb_api` (`shm::added`).
    pub added_capacity: u32,
    /// Bumped whenever `lb_api` adds or removes a peer: workers compare it per request and
    /// rebuild their peers when it moved.
    pub added: AtomicU32,
}

/// Rows of per-worker active counters for `workers` worker processes: room for the workers of
/// four configurations at once (old ones finish their requests after a reload while new ones
/// start), at least 8. A worker that finds no free row counts in the overflow row, which is
/// never reset: counts stay right, only the clean-up after a crash is lost for it.
pub fn slots_for(workers: usize) -> u32 {
    (workers.clamp(1, 1 << 12) * 4).next_power_of_two().max(8) as u32
}

fn owners_bytes(slots: u32) -> usize {
    (slots as usize * core::mem::size_of::<AtomicU32>()).next_multiple_of(64)
}

/// Number of records for `peers` configured peers: twice as many, so that reloads that add
/// peers usually keep the zone's size (and with it all state), and never fewer than 64.
pub fn capacity_for(peers: usize) -> u32 {
    (peers.max(1) * 2).next_power_of_two().max(64) as u32
}

/// Entries for added peers, for upstreams that may gain `peers` of them in all: a power of two
/// (so that small changes keep the zone's layout), at least 32 (so that a change of layout
/// always changes the zone's size, see `zone_bytes`), none when no upstream may.
pub fn added_capacity_for(peers: usize) -> u32 {
    if peers == 0 {
        0
    } else {
        peers.next_power_of_two().max(32) as u32
    }
}

/// The size of the zone for a table of `table` bytes: room for the slab allocator's own
/// bookkeeping besides it, in whole pages.
///
/// nginx hands a zone of the same size over to the next configuration, and a new table is
/// then allocated beside the old one (running workers still use that): two layouts that end up
/// with the same zone size must both fit in it, or the reload fails. Every step of a layout
/// (records, rows, added entries) changes the table by more than a page once the tables are
/// large enough not to fit twice, which `tests::layouts_of_one_size_fit_twice` checks.
pub fn zone_bytes(table: usize) -> usize {
    (table + table / 8 + 64 * 1024).next_multiple_of(4096)
}

/// The index that finds a key's record: one slot per record (a record's number plus one, 0 for
/// an empty slot), probed linearly from the key's hash.
fn index_bytes(capacity: u32) -> usize {
    (capacity as usize * core::mem::size_of::<AtomicU32>()).next_multiple_of(64)
}

fn counters_bytes(capacity: u32, slots: u32) -> usize {
    ((slots as usize + 1) * capacity as usize * core::mem::size_of::<AtomicU32>())
        .next_multiple_of(64)
}

/// Bytes the table needs for `capacity` records, `slots` rows of per-worker counters and
/// `added` entries for added peers. Layout: the header, the records, their index, the owner
/// (pid) of each row, the rows of counters (`slots` + 1 for the overflow row, each `capacity`
/// counters long), then the added peers.
///
/// Records are handed out densely from the first one (`claim`), and nothing but a claim
/// writes to a record no peer has: the pages of records that were never claimed are never
/// touched, so they cost address space, not memory.
pub fn table_bytes(capacity: u32, slots: u32, added: u32) -> usize {
    core::mem::size_of::<Header>()
        + capacity as usize * core::mem::size_of::<PeerShared>()
        + index_bytes(capacity)
        + owners_bytes(slots)
        + counters_bytes(capacity, slots)
        + added as usize * core::mem::size_of::<AddedPeer>()
}

/// The parts of a table, found from its header.
pub struct Table<'a> {
    pub records: &'a [PeerShared],
    /// Finds a key's record (`claim`).
    pub index: &'a [AtomicU32],
    /// pid of the worker that owns each row of counters, 0 for none.
    owners: &'a [AtomicU32],
    counters: &'a [AtomicU32],
    /// The added peers' entries (`shm::added`): only touched under the zone's mutex.
    added: *mut AddedPeer,
    added_len: usize,
}

impl<'a> Table<'a> {
    /// # Safety
    /// `h` must point to a header written by `init_header` followed by `table_bytes` bytes of
    /// table, zeroed when it was made, that stays mapped for `'a`.
    pub unsafe fn from_header(h: *const Header) -> Table<'a> {
        // SAFETY: the layout is the one `table_bytes` describes; every part is an array of
        // atomics (or of records made of atomics) for which all-zero bytes are valid values.
        unsafe {
            let capacity = (*h).capacity as usize;
            let slots = (*h).slots;
            let base = (h as *const u8).add(core::mem::size_of::<Header>());
            let records = base as *const PeerShared;
            let index = base.add(capacity * core::mem::size_of::<PeerShared>());
            let owners = index.add(index_bytes(capacity as u32));
            let counters = owners.add(owners_bytes(slots));
            let added = counters.add(counters_bytes(capacity as u32, slots));
            Table {
                records: core::slice::from_raw_parts(records, capacity),
                index: core::slice::from_raw_parts(index as *const AtomicU32, capacity),
                owners: core::slice::from_raw_parts(owners as *const AtomicU32, slots as usize),
                counters: core::slice::from_raw_parts(
                    counters as *const AtomicU32,
                    (slots as usize + 1) * capacity,
                ),
                added: added as *mut AddedPeer,
                added_len: (*h).added_capacity as usize,
            }
        }
    }

    /// The entries of added peers (all-zero bytes are free entries).
    ///
    /// # Safety
    /// The zone's mutex is held for as long as the slice is used, and no other slice of the
    /// entries is alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn added(&self) -> &mut [AddedPeer] {
        if self.added_len == 0 {
            return &mut [];
        }
        // SAFETY: the entries follow the counters (`table_bytes`); the mutex makes this the
        // only access, as required by the caller; all-zero entries are valid (free).
        unsafe { core::slice::from_raw_parts_mut(self.added, self.added_len) }
    }

    /// The overflow row: counted in by workers that found no free row; never reset.
    pub fn overflow_row(&self) -> usize {
        self.owners.len()
    }

    /// The counter of row `row` for record `record`.
    pub fn counter(&self, row: usize, record: usize) -> &'a AtomicU32 {
        &self.counters[row * self.records.len() + record]
    }

    /// Takes a row of counters for the worker `pid`: one without an owner, or whose owner no
    /// longer runs (`alive` says). Connections its previous owner left counted (it was killed
    /// with requests in flight) are subtracted from the peers' totals. A row whose owner is
    /// alive is never taken, whatever generation it belongs to. Falls back to the overflow
    /// row when every row is owned.
    pub fn take_row(&self, pid: u32, alive: impl Fn(u32) -> bool) -> usize {
        for (row, owner) in self.owners.iter().enumerate() {
            let o = owner.load(Relaxed);
            if o == pid || (o != 0 && alive(o)) {
                continue;
            }
            if owner.compare_exchange(o, pid, Relaxed, Relaxed).is_ok() {
                // Only the row is read: records of peers the old owner had no connection to
                // are not touched (a record's pages cost memory only once touched). And only
                // the part of it for records handed out: they are handed out from the first
                // one, so the old owner (gone before this) never counted a connection past
                // those handed out now.
                for i in 0..claimed(self.records) {
                    let mine = self.counter(row, i);
                    if mine.load(Relaxed) != 0 {
                        self.records[i].forget_active(mine);
                    }
                }
                return row;
            }
        }
        self.overflow_row()
    }

    /// `claim` over this table's records and index.
    pub fn claim(&self, key: (u64, u64), generation: u32, now_ms: u64) -> Option<Claim> {
        claim(self.records, self.index, key, generation, now_ms)
    }

    /// Gives the row back when its worker exits.
    pub fn release_row(&self, row: usize, pid: u32) {
        if let Some(owner) = self.owners.get(row) {
            let _ = owner.compare_exchange(pid, 0, Relaxed, Relaxed);
        }
    }
}

/// The record keys of one upstream's peers, in order. Each `server` line's peer has a record of
/// its own, as nginx counts each on its own: the second peer with the same address (the same
/// line twice, or two names for one address) is keyed as that address's second occurrence.
pub fn peer_keys<'n>(
    upstream: &[u8],
    names: impl IntoIterator<Item = &'n [u8]>,
) -> Vec<(u64, u64)> {
    peer_keys_of_parts(upstream, names.into_iter().map(|n| [n, &[][..], &[][..]]))
}

/// As `peer_keys`, for names given in three parts that are hashed as if joined (so that no
/// joined copy is made).
pub fn peer_keys_of_parts<'n>(
    upstream: &[u8],
    names: impl IntoIterator<Item = [&'n [u8]; 3]>,
) -> Vec<(u64, u64)> {
    // Occurrences are counted by the first occurrence's key (a hash already: no second pass
    // over the name's bytes).
    let names = names.into_iter();
    let mut seen: crate::balance::membership::KeyMap<u32> =
        crate::balance::membership::KeyMap::with_capacity_and_hasher(
            names.size_hint().0,
            Default::default(),
        );
    names
        .map(|parts| {
            let key = peer_key_of(upstream, &parts);
            let n = seen.entry(key).or_insert(0);
            *n += 1;
            if *n == 1 {
                key
            } else {
                let count = format!("\0{n}");
                let mut name = parts.concat();
                name.extend_from_slice(count.as_bytes());
                peer_key(upstream, &name)
            }
        })
        .collect()
}

/// Whether `claim` will find a record for every key in generation `generation`, without
/// changing anything (so that a configuration that cannot be committed fails before it
/// touches what running workers see).
pub fn fits(records: &[PeerShared], keys: &[(u64, u64)], generation: u32, now_ms: u64) -> bool {
    let wanted: HashSet<(u64, u64), BuildHasherDefault<KeyHasher>> = keys.iter().copied().collect();
    let used = claimed(records);
    let available = records[..used]
        .iter()
        .filter(|r| {
            let key = (r.key_a.load(Relaxed), r.key_b.load(Relaxed));
            wanted.contains(&key) || reusable(r, generation, now_ms)
        })
        .count()
        + (records.len() - used);
    available >= wanted.len()
}

/// How many records were ever claimed: records are handed out from the first one on and never
/// given back to "unused" (a key, once set, is only replaced by another), so they are the
/// records before the first one without a key (found by bisection, touching few pages).
pub fn claimed(records: &[PeerShared]) -> usize {
    records.partition_point(|r| r.key_a.load(Relaxed) != 0 || r.key_b.load(Relaxed) != 0)
}

/// The two hashes that identify a peer: FNV-1a 64 and a second FNV-style hash with another
/// basis and prime over the same bytes. 128 bits make an accidental match practically
/// impossible without storing names in shared memory.
pub fn peer_key(upstream: &[u8], address: &[u8]) -> (u64, u64) {
    peer_key_of(upstream, &[address])
}

/// `peer_key` of the address given in parts (hashed as if joined).
pub fn peer_key_of(upstream: &[u8], address: &[&[u8]]) -> (u64, u64) {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for part in [upstream, &[0u8][..]]
        .into_iter()
        .chain(address.iter().copied())
    {
        for &x in part {
            a = (a ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
            b = (b ^ u64::from(x))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(23);
        }
    }
    // Never (0, 0): that marks an unused record.
    (a | 1, b)
}

/// Whether an existing table can be kept as it is.
pub fn header_matches(h: &Header, capacity: u32, slots: u32, added: u32) -> bool {
    h.magic == MAGIC
        && h.version == LAYOUT_VERSION
        && h.capacity == capacity
        && h.slots == slots
        && h.added_capacity == added
        && h.record_size as usize == core::mem::size_of::<PeerShared>()
}

/// Writes a fresh header (the table must already be zeroed).
pub fn init_header(h: &mut Header, capacity: u32, slots: u32, added: u32) {
    h.magic = MAGIC;
    h.version = LAYOUT_VERSION;
    h.capacity = capacity;
    h.record_size = core::mem::size_of::<PeerShared>() as u32;
    h.generation = 0;
    h.slots = slots;
    h.weights.store(0, Relaxed);
    h.added_capacity = added;
    h.added.store(0, Relaxed);
}

/// How a peer got its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The record this peer had under the previous configuration: state carried over.
    Kept(usize),
    /// A record that was free or left over from peers no longer configured: state reset.
    Fresh(usize),
}

impl Claim {
    pub fn index(self) -> usize {
        match self {
            Claim::Kept(i) | Claim::Fresh(i) => i,
        }
    }
}

/// Whether a record that belongs to another key may be taken: it was last claimed two or more
/// generations ago (workers of the previous generation may still be finishing requests, so its
/// records are left alone), or its resolved address left its name's answer long enough ago
/// and nothing is connected to it.
fn reusable(r: &PeerShared, generation: u32, now_ms: u64) -> bool {
    r.generation.load(Relaxed).wrapping_add(1) < generation
        || r.reusable_at(now_ms, RELEASE_GRACE_MS)
}

/// Finds or takes the record for `key` in generation `generation` at `now_ms` (see `reusable`
/// for which records of other keys may be taken). `None` when the table is full. A record
/// found keeps the newest generation that claimed it (workers of the previous generation
/// claim resolved addresses too). Claims from several processes must be serialised by the
/// caller (the zone's mutex).
///
/// `index` (as long as `records`) finds keys: its slots hold record numbers plus one, probed
/// linearly from the key's hash up to an empty slot. A slot may point to a record that has
/// since been given to another key (it is skipped, and its record may be taken again through
/// it); when no empty slot is left in a key's chain the index is rebuilt from the records.
/// New records are taken in order from the first, so that the records in use stay together.
pub fn claim(
    records: &[PeerShared],
    index: &[AtomicU32],
    key: (u64, u64),
    generation: u32,
    now_ms: u64,
) -> Option<Claim> {
    let cap = index.len().min(records.len());
    if cap == 0 {
        return None;
    }
    // `key.1`: `key.0` is always odd (see `peer_key_of`), which would leave half the slots
    // unused as chain starts.
    let start = (key.1 % cap as u64) as usize;
    // A record on the chain that may be taken (its slot is on this key's chain already), and
    // the chain's end.
    let mut candidate: Option<usize> = None;
    let mut empty: Option<usize> = None;
    for step in 0..cap {
        let slot = (start + step) % cap;
        let v = index[slot].load(Relaxed) as usize;
        if v == 0 || v > cap {
            empty = Some(slot);
            break;
        }
        let i = v - 1;
        let r = &records[i];
        let (a, b) = (r.key_a.load(Relaxed), r.key_b.load(Relaxed));
        if (a, b) == key {
            let before = r.generation.fetch_max(generation, Relaxed);
            if before.wrapping_add(1) < generation {
                // Not claimed by the previous configuration: the peer was gone (its server
                // line removed, then added back). What an operator set for it then is void.
                r.forget_operator();
            }
            return Some(Claim::Kept(i));
        }
        if candidate.is_none() && reusable(r, generation, now_ms) {
            candidate = Some(i);
        }
    }
    if let Some(i) = candidate {
        take(&records[i], key, generation);
        return Some(Claim::Fresh(i));
    }
    let used = claimed(&records[..cap]);
    let i = if used < cap {
        used
    } else {
        records[..cap]
            .iter()
            .position(|r| reusable(r, generation, now_ms))?
    };
    take(&records[i], key, generation);
    match empty {
        Some(slot) => index[slot].store(i as u32 + 1, Relaxed),
        None => rebuild_index(&records[..cap], index),
    }
    Some(Claim::Fresh(i))
}

/// Writes the index afresh from the records' keys (every chain without stale slots).
fn rebuild_index(records: &[PeerShared], index: &[AtomicU32]) {
    let cap = records.len();
    for slot in index {
        slot.store(0, Relaxed);
    }
    for (i, r) in records[..claimed(records)].iter().enumerate() {
        let start = (r.key_b.load(Relaxed) % cap as u64) as usize;
        for step in 0..cap {
            let slot = &index[(start + step) % cap];
            if slot.load(Relaxed) == 0 {
                slot.store(i as u32 + 1, Relaxed);
                break;
            }
        }
    }
}

fn take(r: &PeerShared, key: (u64, u64), generation: u32) {
    r.reset_state(true);
    r.key_a.store(key.0, Relaxed);
    r.key_b.store(key.1, Relaxed);
    r.generation.store(generation, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records and their index, in ordinary memory.
    struct Records(Vec<PeerShared>, Vec<AtomicU32>);

    impl Records {
        fn claim(&self, key: (u64, u64), generation: u32, now_ms: u64) -> Option<Claim> {
            claim(&self.0, &self.1, key, generation, now_ms)
        }
    }

    impl core::ops::Deref for Records {
        type Target = [PeerShared];
        fn deref(&self) -> &[PeerShared] {
            &self.0
        }
    }

    fn table(n: usize) -> Records {
        Records(
            (0..n).map(|_| PeerShared::default()).collect(),
            (0..n).map(|_| AtomicU32::new(0)).collect(),
        )
    }

    #[test]
    fn same_peer_keeps_its_record_across_generations() {
        let t = table(64);
        let k1 = peer_key(b"backend", b"127.0.0.1:8081");
        let k2 = peer_key(b"backend", b"127.0.0.1:8082");
        let c1 = t.claim(k1, 1, 0).unwrap();
        let c2 = t.claim(k2, 1, 0).unwrap();
        assert!(matches!(c1, Claim::Fresh(_)) && matches!(c2, Claim::Fresh(_)));
        assert_ne!(c1.index(), c2.index());
        t[c1.index()].requests.store(7, Relaxed);
        assert_eq!(t.claim(k1, 2, 0), Some(Claim::Kept(c1.index())));
        assert_eq!(t[c1.index()].requests.load(Relaxed), 7);
    }

    #[test]
    fn keys_differ_by_upstream_and_address() {
        assert_ne!(peer_key(b"a", b"x"), peer_key(b"b", b"x"));
        assert_ne!(peer_key(b"a", b"x"), peer_key(b"a", b"y"));
        // The separator keeps "ab"+"c" apart from "a"+"bc".
        assert_ne!(peer_key(b"ab", b"c"), peer_key(b"a", b"bc"));
    }

    #[test]
    fn gone_peers_are_reused_after_two_generations() {
        let t = table(4);
        let keys: Vec<_> = (0..4)
            .map(|i| peer_key(b"u", format!("10.0.0.{i}:80").as_bytes()))
            .collect();
        for k in &keys {
            t.claim(*k, 1, 0).unwrap();
        }
        let newcomer = peer_key(b"u", b"10.0.0.9:80");
        // Generation 2: the old peers may still be used by old workers.
        assert_eq!(t.claim(newcomer, 2, 0), None);
        // Generation 3: none of the four was claimed in 2, so all are stale and reusable.
        let c = t.claim(newcomer, 3, 0).unwrap();
        assert!(matches!(c, Claim::Fresh(_)));
        assert_eq!(t[c.index()].requests.load(Relaxed), 0);
        // The newcomer is found again.
        assert_eq!(t.claim(newcomer, 4, 0), Some(Claim::Kept(c.index())));
    }

    #[test]
    fn records_are_handed_out_densely_and_found_through_the_index() {
        let t = table(256);
        let keys: Vec<_> = (0..100)
            .map(|i| peer_key(b"u", format!("10.0.{}.{}:80", i / 7, i % 7).as_bytes()))
            .collect();
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(t.claim(*k, 1, 0), Some(Claim::Fresh(n)));
        }
        // Only the first 100 records were written (the rest of the pages stay untouched).
        assert_eq!(claimed(&t), 100);
        assert!(t[100..].iter().all(|r| r.key() == (0, 0)));
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(t.claim(*k, 2, 0), Some(Claim::Kept(n)));
        }
    }

    #[test]
    fn stale_slots_and_a_full_index_still_find_every_key() {
        // Eight records; generations move on so that old keys become reusable, over and over:
        // slots keep pointing to records given to other keys, and chains fill up.
        let t = table(8);
        let mut live: Vec<(u64, u64)> = Vec::new();
        for round in 0..50u32 {
            let generation = 1 + 3 * round;
            let keys: Vec<_> = (0..8)
                .map(|i| peer_key(b"u", format!("{round}.{i}").as_bytes()))
                .collect();
            for k in &keys {
                assert!(
                    matches!(t.claim(*k, generation, 0), Some(Claim::Fresh(_))),
                    "round {round}"
                );
            }
            for (n, k) in keys.iter().enumerate() {
                let again = t.claim(*k, generation, 0).unwrap();
                assert!(matches!(again, Claim::Kept(_)), "round {round} key {n}");
                assert_eq!(t[again.index()].key(), *k);
            }
            // Old keys are gone (their records belong to new ones).
            for k in &live {
                assert!(t.iter().all(|r| r.key() != *k));
            }
            live = keys;
        }
        // Full, nothing reusable in the same generation.
        assert_eq!(t.claim(peer_key(b"u", b"x"), 148, 0), None);
    }

    #[test]
    fn fresh_records_are_reset() {
        let t = table(2);
        let k = peer_key(b"u", b"a");
        let i = t.claim(k, 1, 0).unwrap().index();
        t[i].fails.store(3, Relaxed);
        t[i].requests.store(9, Relaxed);
        let other = peer_key(b"v", b"b");
        let j = t.claim(other, 1, 0).unwrap().index();
        assert_ne!(i, j);
        // Both stale by generation 5: the next new key reuses one and resets it.
        let n = t.claim(peer_key(b"w", b"c"), 5, 0).unwrap().index();
        assert_eq!(t[n].fails.load(Relaxed), 0);
        assert_eq!(t[n].requests.load(Relaxed), 0);
    }

    #[test]
    fn capacity_and_header() {
        assert_eq!(capacity_for(0), 64);
        assert_eq!(capacity_for(3), 64);
        assert_eq!(capacity_for(1000), 2048);
        let mut h = Header {
            magic: 0,
            version: 0,
            capacity: 0,
            record_size: 0,
            generation: 0,
            slots: 0,
            weights: AtomicU32::new(0),
            added_capacity: 0,
            added: AtomicU32::new(0),
        };
        assert!(!header_matches(&h, 64, 8, 0));
        init_header(&mut h, 64, 8, 16);
        assert!(header_matches(&h, 64, 8, 16));
        assert!(!header_matches(&h, 128, 8, 16));
        assert!(!header_matches(&h, 64, 16, 16));
        assert!(!header_matches(&h, 64, 8, 0));
        assert!(table_bytes(64, 8, 0) >= 64 * 64 + 9 * 64 * 4);
        assert_eq!(
            table_bytes(64, 8, 16) - table_bytes(64, 8, 0),
            16 * core::mem::size_of::<AddedPeer>()
        );
    }

    /// A reload whose layout differs but whose zone has the same size allocates the new table
    /// beside the old one: it must fit (see `zone_bytes`). Checked for one step of each part
    /// of the layout, over the sizes configurations can have.
    #[test]
    fn layouts_of_one_size_fit_twice() {
        // The slab allocator's bookkeeping: its pool header and one page descriptor per page.
        let fits_twice = |a: usize, b: usize, zone: usize| a + b + zone / 64 + 8192 <= zone;
        let mut checked = 0;
        for cap in (6..=18).map(|k| 1u32 << k) {
            for slots in (3..=12).map(|k| 1u32 << k) {
                // Records are counted for every peer that may be added (`zone::records_wanted`),
                // and there are twice as many records as wanted: never more entries than
                // records.
                for added in [0u32, 32, 64, 128, 1024, 1 << 17]
                    .into_iter()
                    .filter(|&a| a <= cap)
                {
                    let t = table_bytes(cap, slots, added);
                    let z = zone_bytes(t);
                    let steps = [
                        table_bytes(cap * 2, slots, added),
                        table_bytes(cap, slots * 2, added),
                        table_bytes(cap, slots, if added == 0 { 32 } else { added * 2 }),
                    ];
                    for t2 in steps {
                        if zone_bytes(t2) == z {
                            assert!(fits_twice(t, t2, z), "{cap} {slots} {added}: {t} {t2} {z}");
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 500, "{checked}");
        assert_eq!(added_capacity_for(0), 0);
        assert_eq!(added_capacity_for(1), 32);
        assert_eq!(added_capacity_for(100), 128);
        assert_eq!(slots_for(1), 8);
        assert_eq!(slots_for(16), 64);
        assert_eq!(slots_for(256), 1024);
    }

    /// A zeroed, 64-byte aligned table of `capacity` records and `slots` rows.
    fn raw_table(capacity: u32, slots: u32) -> (Vec<[u64; 8]>, *mut Header) {
        let lines = table_bytes(capacity, slots, 16).div_ceil(64);
        let mut buf: Vec<[u64; 8]> = vec![[0; 8]; lines + 1];
        // Align by hand: a Vec of [u64; 8] is only 8-byte aligned.
        let p = buf.as_mut_ptr() as usize;
        let h = p.next_multiple_of(64) as *mut Header;
        // SAFETY: `h` lies within `buf`, with room for the table behind it.
        unsafe { init_header(&mut *h, capacity, slots, 16) };
        (buf, h)
    }

    #[test]
    fn rows_of_live_workers_are_never_taken() {
        let (_buf, h) = raw_table(64, 8);
        // SAFETY: `raw_table` made a table of that layout.
        let t = unsafe { Table::from_header(h) };
        let alive = |pid: u32| pid < 100;
        // Eight live workers of several generations take the eight rows.
        let rows: Vec<usize> = (1..=8).map(|pid| t.take_row(pid, alive)).collect();
        assert_eq!(rows, (0..8).collect::<Vec<_>>());
        // A ninth live worker counts in the overflow row, which is nobody's.
        assert_eq!(t.take_row(9, alive), t.overflow_row());
        // Six peers have records (handed out from the first one).
        for i in 0..6u64 {
            assert_eq!(
                t.claim((i + 1, i), 1, 0).map(|c| c.index()),
                Some(i as usize)
            );
        }
        // Worker 3 had two connections to record 5 and is killed; its row goes to the next
        // worker, which subtracts them.
        let r = &t.records[5];
        r.on_pick(&Default::default(), 0, t.counter(2, 5));
        r.on_pick(&Default::default(), 0, t.counter(2, 5));
        r.on_pick(&Default::default(), 0, t.counter(4, 5));
        assert_eq!(r.active(), 3);
        let alive = |pid: u32| (pid < 100 && pid != 3) || pid >= 200;
        assert_eq!(t.take_row(200, alive), 2);
        assert_eq!(r.active(), 1);
        // A worker that exits gives its row back.
        t.release_row(6, 7);
        assert_eq!(t.take_row(201, alive), 6);
        // Only the owner can give a row back.
        t.release_row(0, 99);
        assert_eq!(t.take_row(202, alive), t.overflow_row());
    }

    #[test]
    fn duplicate_addresses_get_records_of_their_own() {
        let keys = peer_keys(
            b"u",
            [
                &b"127.0.0.1:80"[..],
                b"127.0.0.1:81",
                b"127.0.0.1:80",
                b"127.0.0.1:80",
            ],
        );
        let set: HashSet<_> = keys.iter().collect();
        assert_eq!(set.len(), 4);
        // The first occurrence keeps the plain key, so its state carries over from before.
        assert_eq!(keys[0], peer_key(b"u", b"127.0.0.1:80"));
        assert_eq!(
            keys,
            peer_keys(
                b"u",
                [
                    &b"127.0.0.1:80"[..],
                    b"127.0.0.1:81",
                    b"127.0.0.1:80",
                    b"127.0.0.1:80"
                ]
            )
        );
    }

    #[test]
    fn fits_counts_free_stale_and_own_records() {
        let t = table(4);
        let old: Vec<_> = (0..4)
            .map(|i| peer_key(b"u", format!("a{i}").as_bytes()))
            .collect();
        for k in &old {
            t.claim(*k, 1, 0).unwrap();
        }
        let new: Vec<_> = (0..2)
            .map(|i| peer_key(b"u", format!("b{i}").as_bytes()))
            .collect();
        // Generation 2: the four records may still be used by generation 1's workers.
        assert!(!fits(&t, &new, 2, 0));
        assert!(
            fits(&t, &old, 2, 0),
            "the same peers find their own records"
        );
        assert!(fits(&t, &new, 3, 0));
        // fits() changed nothing.
        assert!(old
            .iter()
            .all(|k| matches!(t.claim(*k, 2, 0), Some(Claim::Kept(_)))));
    }

    #[test]
    fn released_records_are_reused_after_the_grace_period_when_idle() {
        let t = table(2);
        let a = peer_key(b"u", b"10.0.0.1:80");
        let b = peer_key(b"u", b"10.0.0.2:80");
        let ia = t.claim(a, 1, 0).unwrap().index();
        t.claim(b, 1, 0).unwrap();
        let c = peer_key(b"u", b"10.0.0.3:80");
        // Full, same generation: nothing to take.
        assert_eq!(t.claim(c, 1, 1000), None);
        t[ia].release_membership(1000);
        let mine = AtomicU32::new(0);
        t[ia].on_pick(&Default::default(), 1000, &mine);
        // Within the grace period, or with a connection still counted: kept for `a`.
        assert_eq!(t.claim(c, 1, 1000 + RELEASE_GRACE_MS - 1), None);
        assert_eq!(t.claim(c, 1, 1000 + RELEASE_GRACE_MS), None);
        t[ia].on_done(false, &Default::default(), 1001, &mine);
        assert!(fits(&t, &[c], 1, 1000 + RELEASE_GRACE_MS));
        let got = t.claim(c, 1, 1000 + RELEASE_GRACE_MS).unwrap();
        assert_eq!(got, Claim::Fresh(ia));
        assert_eq!(
            t[ia].requests.load(Relaxed),
            0,
            "a reused record starts clean"
        );
        // The address that came back in time keeps its record and its counters.
        let ib = t.claim(b, 1, 0).unwrap().index();
        t[ib].requests.store(5, Relaxed);
        t[ib].release_membership(10);
        assert_eq!(t.claim(b, 1, 20), Some(Claim::Kept(ib)));
        t[ib].join(1, false, true, false);
        assert!(!t[ib].reusable_at(u64::MAX, 0), "a member again");
        assert_eq!(t[ib].requests.load(Relaxed), 5);
    }

    #[test]
    fn older_generations_never_lower_a_records_generation() {
        let t = table(4);
        let k = peer_key(b"u", b"a");
        let i = t.claim(k, 5, 0).unwrap().index();
        // A worker of generation 4 (still running after a reload) finds the same address.
        assert_eq!(t.claim(k, 4, 0), Some(Claim::Kept(i)));
        assert_eq!(t[i].generation.load(Relaxed), 5);
    }

    #[test]
    fn a_peer_back_after_a_configuration_without_it_forgets_operator_changes() {
        let t = table(8);
        let k = peer_key(b"u", b"10.0.0.1:80");
        let i = t.claim(k, 1, 0).unwrap().index();
        t[i].set_admin(1);
        t[i].set_weight(Some(4));
        // Claimed again by the next configuration: kept.
        assert_eq!(t.claim(k, 2, 0), Some(Claim::Kept(i)));
        assert_eq!((t[i].admin(), t[i].weight_override()), (1, Some(4)));
        // Generation 3 did not have it; generation 4 has it again.
        assert_eq!(t.claim(k, 4, 0), Some(Claim::Kept(i)));
        assert_eq!((t[i].admin(), t[i].weight_override()), (0, None));
    }
}
