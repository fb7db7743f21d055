//! The table of peer records in the shared zone, and how a configured peer finds its record.
//!
//! A record is keyed by upstream name and peer address, not by position, so that after a reload
//! a peer that kept its upstream and address gets its old record (its failures, counters and,
//! later, health) while new peers get fresh ones. Lookup is open addressing with linear probing.
//! The nginx master claims records while it loads a configuration, before that configuration's
//! workers exist; workers only ever touch the records they were handed.

use core::sync::atomic::Ordering::Relaxed;

use super::peer::PeerShared;

/// Identifies the zone's layout; a zone that does not carry it is rebuilt.
pub const MAGIC: u64 = u64::from_le_bytes(*b"ngxlbtb1");
/// Bumped whenever `PeerShared` or `Header` change shape.
pub const LAYOUT_VERSION: u32 = 1;

/// Start of the table in the zone; the records follow it.
#[repr(C, align(64))]
pub struct Header {
    pub magic: u64,
    pub version: u32,
    pub capacity: u32,
    pub record_size: u32,
    /// Configuration generation, bumped on every (re)load that uses the table.
    pub generation: u32,
}

/// Number of records for `peers` configured peers: twice as many, so that reloads that add
/// peers usually keep the zone's size (and with it all state), and never fewer than 64.
pub fn capacity_for(peers: usize) -> u32 {
    (peers.max(1) * 2).next_power_of_two().max(64) as u32
}

/// Bytes the table needs for `capacity` records.
pub fn table_bytes(capacity: u32) -> usize {
    core::mem::size_of::<Header>() + capacity as usize * core::mem::size_of::<PeerShared>()
}

/// The two hashes that identify a peer: FNV-1a 64 and a second FNV-style hash with another
/// basis and prime over the same bytes. 128 bits make an accidental match practically
/// impossible without storing names in shared memory.
pub fn peer_key(upstream: &[u8], address: &[u8]) -> (u64, u64) {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    let bytes = upstream.iter().chain(&[0u8]).chain(address.iter());
    for &x in bytes {
        a = (a ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
        b = (b ^ u64::from(x))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(23);
    }
    // Never (0, 0): that marks an unused record.
    (a | 1, b)
}

/// Whether an existing table can be kept as it is.
pub fn header_matches(h: &Header, capacity: u32) -> bool {
    h.magic == MAGIC
        && h.version == LAYOUT_VERSION
        && h.capacity == capacity
        && h.record_size as usize == core::mem::size_of::<PeerShared>()
}

/// Writes a fresh header (records must already be zeroed).
pub fn init_header(h: &mut Header, capacity: u32) {
    h.magic = MAGIC;
    h.version = LAYOUT_VERSION;
    h.capacity = capacity;
    h.record_size = core::mem::size_of::<PeerShared>() as u32;
    h.generation = 0;
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

/// Finds or takes the record for `key` in generation `generation`. Records last claimed two or
/// more generations ago belong to peers that are gone and are reused (workers of the previous
/// generation may still be finishing requests, so its records are left alone). `None` when the
/// table is full.
pub fn claim(records: &[PeerShared], key: (u64, u64), generation: u32) -> Option<Claim> {
    let cap = records.len();
    if cap == 0 {
        return None;
    }
    let mut reusable: Option<usize> = None;
    let start = (key.0 % cap as u64) as usize;
    for step in 0..cap {
        let i = (start + step) % cap;
        let r = &records[i];
        let (a, b) = (r.key_a.load(Relaxed), r.key_b.load(Relaxed));
        if (a, b) == key {
            r.generation.store(generation, Relaxed);
            return Some(Claim::Kept(i));
        }
        if a == 0 && b == 0 {
            // End of this key's probe chain: the key is not in the table.
            let i = reusable.unwrap_or(i);
            take(&records[i], key, generation);
            return Some(Claim::Fresh(i));
        }
        let stale = r.generation.load(Relaxed).wrapping_add(1) < generation;
        if stale && reusable.is_none() {
            reusable = Some(i);
        }
    }
    let i = reusable?;
    take(&records[i], key, generation);
    Some(Claim::Fresh(i))
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

    fn table(n: usize) -> Vec<PeerShared> {
        (0..n).map(|_| PeerShared::default()).collect()
    }

    #[test]
    fn same_peer_keeps_its_record_across_generations() {
        let t = table(64);
        let k1 = peer_key(b"backend", b"127.0.0.1:8081");
        let k2 = peer_key(b"backend", b"127.0.0.1:8082");
        let c1 = claim(&t, k1, 1).unwrap();
        let c2 = claim(&t, k2, 1).unwrap();
        assert!(matches!(c1, Claim::Fresh(_)) && matches!(c2, Claim::Fresh(_)));
        assert_ne!(c1.index(), c2.index());
        t[c1.index()].requests.store(7, Relaxed);
        assert_eq!(claim(&t, k1, 2), Some(Claim::Kept(c1.index())));
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
            claim(&t, *k, 1).unwrap();
        }
        let newcomer = peer_key(b"u", b"10.0.0.9:80");
        // Generation 2: the old peers may still be used by old workers.
        assert_eq!(claim(&t, newcomer, 2), None);
        // Generation 3: none of the four was claimed in 2, so all are stale and reusable.
        let c = claim(&t, newcomer, 3).unwrap();
        assert!(matches!(c, Claim::Fresh(_)));
        assert_eq!(t[c.index()].requests.load(Relaxed), 0);
        // The newcomer is found again.
        assert_eq!(claim(&t, newcomer, 4), Some(Claim::Kept(c.index())));
    }

    #[test]
    fn fresh_records_are_reset() {
        let t = table(2);
        let k = peer_key(b"u", b"a");
        let i = claim(&t, k, 1).unwrap().index();
        t[i].fails.store(3, Relaxed);
        t[i].requests.store(9, Relaxed);
        let other = peer_key(b"v", b"b");
        let j = claim(&t, other, 1).unwrap().index();
        assert_ne!(i, j);
        // Both stale by generation 5: the next new key reuses one and resets it.
        let n = claim(&t, peer_key(b"w", b"c"), 5).unwrap().index();
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
        };
        assert!(!header_matches(&h, 64));
        init_header(&mut h, 64);
        assert!(header_matches(&h, 64));
        assert!(!header_matches(&h, 128));
        assert!(table_bytes(64) >= 64 * 64);
    }
}
