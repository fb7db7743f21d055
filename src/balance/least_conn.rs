//! Weighted least connections without scanning every peer.
//!
//! nginx's `least_conn` walks all peers for every request, choosing the fewest active
//! connections relative to weight, and breaks ties with smooth weighted round-robin. Here each
//! worker keeps a tournament tree (a binary tree whose every node holds the better of its two
//! children) over its last known view of the shared connection counts, so the best peer is at
//! the root and a change costs O(log n):
//!
//! - the winner's count is read from shared memory before it is used; if another worker changed
//!   it, the tree is corrected and the pick repeats (each correction makes that entry exact);
//! - this worker's own picks and completions update the tree at once;
//! - every `n` picks or 100 ms, whichever comes first, the whole tree is rebuilt from the shared
//!   counts (O(n), so amortised O(1) per pick), which also brings back peers that were set
//!   aside as unavailable.
//!
//! Lists of up to [`SCAN_MAX_PEERS`] peers keep no tree: a pick scans their keys (as nginx
//! scans its peers), which costs less than keeping a tree up to date for a handful of peers;
//! the choice is the same (the tree's root is the least key of the leaves).
//!
//! Ties are broken by stride scheduling: each peer's next turn is at a virtual time that grows
//! by `1/weight` per pick, smallest first, which like smooth weighted round-robin rotates
//! through the tied peers in proportion to their weights. Each tree entry is a single 128-bit
//! key (load, virtual time, index), so a comparison is one instruction.

/// Whether a peer may take this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Yes,
    /// Not for this request (already tried, at `max_conns`): asked again next time.
    NotNow,
    /// Unavailable (health, passive failures): set aside until the next rebuild.
    Unavailable,
}

/// At most this many peers are skipped for one request; more are set aside like unavailable
/// ones (a request never tries that many peers in practice).
const MAX_SKIPPED: usize = 32;
/// Rebuild at least this often.
const REFRESH_MS: u64 = 100;
/// An empty slot of the tree (no peer, or one set aside).
const NIL: u128 = u128::MAX;
/// Peers beyond this many are left out (the index lives in the low bits of a key).
pub const MAX_PEERS: usize = 1 << 24;
/// Lists of up to this many peers are scanned on each pick instead of keeping a tree (one bit
/// per peer marks the ones a pick skips).
pub const SCAN_MAX_PEERS: usize = 16;

/// A peer's place in the tournament, one number so that a comparison is one instruction:
/// load (48 bits: `active << 32 / weight`), then virtual time of its next turn (56 bits),
/// then its index (24 bits).
fn key(load: u64, vtime: u64, i: usize) -> u128 {
    (u128::from(load.min((1 << 48) - 1)) << 80)
        | (u128::from(vtime.min((1 << 56) - 1)) << 24)
        | i as u128
}

#[derive(Debug, Clone)]
pub struct LeastConn {
    weights: Vec<u32>,
    /// Last known load per peer: `active << 32 / weight`.
    load: Vec<u64>,
    /// Virtual time of each peer's next turn: starts at half a stride and grows by a stride
    /// (`2^32 / weight`) per pick; rebased at every rebuild so it stays small.
    vtime: Vec<u64>,
    aside: Vec<bool>,
    /// The virtual time of the latest pick: how far the rotation has come. A peer that was
    /// not picked for a while (set aside, or busier than the others) is lifted to within one
    /// stride of it at the next rebuild, so it rejoins the rotation with its fair share
    /// instead of winning every tie until it has caught up.
    vnow: u64,
    /// Tournament tree of keys: `tree[1]` is the root; leaves start at `size`. Empty (and
    /// `size` 0) for a list that is scanned instead (`SCAN_MAX_PEERS`).
    tree: Vec<u128>,
    size: usize,
    picks_since_refresh: usize,
    refreshed_ms: u64,
}

fn load_key(active: u32, weight: u32) -> u64 {
    (u64::from(active) << 32) / u64::from(weight.max(1))
}

fn stride(weight: u32) -> u64 {
    (1u64 << 32) / u64::from(weight.max(1))
}

impl LeastConn {
    /// `weights[i]` = 0 leaves peer `i` out for good (e.g. `down`).
    pub fn new(weights: &[u32]) -> LeastConn {
        LeastConn::build(weights, weights.len() <= SCAN_MAX_PEERS)
    }

    /// `new`, scanning or with a tree as `scan` says.
    fn build(weights: &[u32], scan: bool) -> LeastConn {
        let n = weights.len().min(MAX_PEERS);
        let size = if scan {
            0
        } else {
            n.max(1).next_power_of_two()
        };
        let mut lc = LeastConn {
            weights: weights[..n].to_vec(),
            load: vec![0; n],
            vtime: weights[..n].iter().map(|&w| stride(w) / 2).collect(),
            aside: vec![false; n],
            vnow: 0,
            tree: vec![NIL; 2 * size],
            size,
            picks_since_refresh: 0,
            refreshed_ms: 0,
        };
        lc.rebuild();
        lc
    }

    fn leaf(&self, i: usize) -> u128 {
        if self.weights[i] == 0 || self.aside[i] {
            NIL
        } else {
            key(self.load[i], self.vtime[i], i)
        }
    }

    /// Whether picks scan the keys (no tree).
    #[inline(always)]
    fn scans(&self) -> bool {
        self.size == 0
    }

    /// The least key of the peers not skipped by this pick (`hidden`, a bit per peer), as the
    /// tree's root would hold it; `NIL` when there is none.
    #[inline(always)]
    fn least(&self, hidden: u32) -> u128 {
        let mut best = NIL;
        for i in 0..self.weights.len() {
            if hidden & (1 << i) == 0 {
                best = best.min(self.leaf(i));
            }
        }
        best
    }

    fn rebuild(&mut self) {
        for i in 0..self.size {
            self.tree[self.size + i] = if i < self.weights.len() {
                self.leaf(i)
            } else {
                NIL
            };
        }
        for p in (1..self.size).rev() {
            self.tree[p] = self.tree[2 * p].min(self.tree[2 * p + 1]);
        }
    }

    #[inline]
    fn update(&mut self, i: usize) {
        if self.scans() {
            return;
        }
        let mut p = self.size + i;
        self.tree[p] = self.leaf(i);
        while p > 1 {
            p /= 2;
            let m = self.tree[2 * p].min(self.tree[2 * p + 1]);
            if self.tree[p] == m {
                break;
            }
            self.tree[p] = m;
        }
    }

    #[inline]
    fn hide(&mut self, i: usize) {
        let mut p = self.size + i;
        self.tree[p] = NIL;
        while p > 1 {
            p /= 2;
            self.tree[p] = self.tree[2 * p].min(self.tree[2 * p + 1]);
        }
    }

    /// Re-reads every count, brings set-aside peers back and rebases the virtual times.
    pub fn refresh(&mut self, active: impl Fn(usize) -> u32, now_ms: u64) {
        // No peer lags more than one of its strides behind the rotation: then every virtual
        // time lies within two strides of `vnow`, and the rebase keeps them small for ever.
        for i in 0..self.weights.len() {
            let floor = self.vnow.saturating_sub(stride(self.weights[i]));
            if self.vtime[i] < floor {
                self.vtime[i] = floor;
            }
        }
        let base = (0..self.weights.len())
            .filter(|&i| self.weights[i] > 0)
            .map(|i| self.vtime[i])
            .min()
            .unwrap_or(0)
            .min(self.vnow);
        self.vnow -= base;
        for i in 0..self.weights.len() {
            self.load[i] = load_key(active(i), self.weights[i]);
            self.vtime[i] -= base.min(self.vtime[i]);
            self.aside[i] = false;
        }
        self.rebuild();
        self.picks_since_refresh = 0;
        self.refreshed_ms = now_ms;
    }

    /// Picks the peer with the fewest active connections relative to its weight among those
    /// `fit` accepts, and counts the connection about to be opened to it. `active(i)` reads the
    /// shared count. Allocates nothing.
    pub fn pick(
        &mut self,
        active: impl Fn(usize) -> u32,
        mut fit: impl FnMut(usize) -> Fit,
        now_ms: u64,
    ) -> Option<usize> {
        if self.picks_since_refresh >= self.weights.len().max(64)
            || now_ms.saturating_sub(self.refreshed_ms) >= REFRESH_MS
        {
            self.refresh(&active, now_ms);
        }
        let (i, now_active) = if self.scans() {
            self.choose_by_scan(&active, &mut fit)
        } else {
            self.choose_in_tree(&active, &mut fit)
        }?;
        self.vnow = self.vnow.max(self.vtime[i]);
        self.vtime[i] = self.vtime[i].saturating_add(stride(self.weights[i]));
        self.load[i] = load_key(now_active.saturating_add(1), self.weights[i]);
        self.update(i);
        self.picks_since_refresh += 1;
        Some(i)
    }

    /// `pick`'s choice in a scanned list: the peer with the least key that `fit` accepts, and
    /// its count as read.
    #[inline(always)]
    fn choose_by_scan(
        &mut self,
        active: &impl Fn(usize) -> u32,
        fit: &mut impl FnMut(usize) -> Fit,
    ) -> Option<(usize, u32)> {
        // The peers this pick skipped (`Fit::NotNow`).
        let mut hidden = 0u32;
        loop {
            let top = self.least(hidden);
            if top == NIL {
                return None;
            }
            let i = (top & 0xff_ffff) as usize;
            let now_active = active(i);
            let load = load_key(now_active, self.weights[i]);
            if load != self.load[i] {
                // Another worker changed this peer's count since we last looked.
                self.load[i] = load;
                continue;
            }
            match fit(i) {
                Fit::Yes => return Some((i, now_active)),
                Fit::NotNow => hidden |= 1 << i,
                Fit::Unavailable => self.aside[i] = true,
            }
        }
    }

    /// `pick`'s choice with the tree: as `choose_by_scan`, from the root.
    #[inline(never)]
    fn choose_in_tree(
        &mut self,
        active: &impl Fn(usize) -> u32,
        fit: &mut impl FnMut(usize) -> Fit,
    ) -> Option<(usize, u32)> {
        let mut skipped = [0u32; MAX_SKIPPED];
        let mut n_skipped = 0;
        let chosen = loop {
            let top = self.tree[1];
            if top == NIL {
                break None;
            }
            let i = (top & 0xff_ffff) as usize;
            let now_active = active(i);
            let load = load_key(now_active, self.weights[i]);
            if load != self.load[i] {
                // Another worker changed this peer's count since we last looked.
                self.load[i] = load;
                self.update(i);
                continue;
            }
            match fit(i) {
                Fit::Yes => break Some((i, now_active)),
                Fit::NotNow if n_skipped < MAX_SKIPPED => {
                    skipped[n_skipped] = i as u32;
                    n_skipped += 1;
                    self.hide(i);
                }
                _ => {
                    self.aside[i] = true;
                    self.hide(i);
                }
            }
        };
        for &s in &skipped[..n_skipped] {
            self.update(s as usize);
        }
        chosen
    }

    /// Tells the tree this worker's view of peer `i`'s count changed (a connection ended, or
    /// the count after a pick differs from the one `pick` assumed).
    pub fn set_active(&mut self, i: usize, active: u32) {
        if i >= self.weights.len() {
            return;
        }
        let load = load_key(active, self.weights[i]);
        if load != self.load[i] {
            self.load[i] = load;
            self.update(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A shared-count simulator: picks add a connection, `done` removes one.
    struct Sim {
        active: RefCell<Vec<u32>>,
    }

    impl Sim {
        fn new(n: usize) -> Sim {
            Sim {
                active: RefCell::new(vec![0; n]),
            }
        }
        fn get(&self, i: usize) -> u32 {
            self.active.borrow()[i]
        }
        fn pick(&self, lc: &mut LeastConn, fit: impl FnMut(usize) -> Fit) -> Option<usize> {
            let r = lc.pick(|i| self.get(i), fit, 0);
            if let Some(i) = r {
                self.active.borrow_mut()[i] += 1;
                lc.set_active(i, self.get(i));
            }
            r
        }
        fn done(&self, lc: &mut LeastConn, i: usize) {
            self.active.borrow_mut()[i] -= 1;
            lc.set_active(i, self.get(i));
        }
    }

    /// The scan of a small list chooses as the tree would, through skips, peers set aside,
    /// other workers' counts, refreshes and virtual times.
    #[test]
    fn scanning_chooses_as_the_tree() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..300 {
            let n = 1 + (next() % SCAN_MAX_PEERS as u64) as usize;
            let weights: Vec<u32> = (0..n).map(|_| (next() % 4) as u32).collect();
            let mut scan = LeastConn::build(&weights, true);
            let mut tree = LeastConn::build(&weights, false);
            assert!(scan.scans() && !tree.scans());
            let mut active = vec![0u32; n];
            let mut open: Vec<usize> = vec![];
            for k in 0..200u64 {
                let now = k * 7;
                // Each peer's answer for this pick, the same for both.
                let fits: Vec<Fit> = (0..n)
                    .map(|_| match next() % 10 {
                        0 => Fit::NotNow,
                        1 => Fit::Unavailable,
                        _ => Fit::Yes,
                    })
                    .collect();
                let a = scan.pick(|i| active[i], |i| fits[i], now);
                let b = tree.pick(|i| active[i], |i| fits[i], now);
                assert_eq!(a, b, "round {round}, pick {k}, weights {weights:?}");
                if let Some(i) = a {
                    active[i] += 1;
                    open.push(i);
                }
                match next() % 4 {
                    // A connection of this worker ends.
                    0 if !open.is_empty() => {
                        let i = open.swap_remove((next() % open.len() as u64) as usize);
                        active[i] -= 1;
                        scan.set_active(i, active[i]);
                        tree.set_active(i, active[i]);
                    }
                    // Another worker's count changes behind our back.
                    1 => {
                        let i = (next() % n as u64) as usize;
                        active[i] =
                            (next() % 5) as u32 + open.iter().filter(|&&j| j == i).count() as u32;
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn prefers_the_idle_peer() {
        let sim = Sim::new(3);
        let mut lc = LeastConn::new(&[1, 1, 1]);
        let a = sim.pick(&mut lc, |_| Fit::Yes).unwrap();
        let b = sim.pick(&mut lc, |_| Fit::Yes).unwrap();
        let c = sim.pick(&mut lc, |_| Fit::Yes).unwrap();
        let mut all = vec![a, b, c];
        all.sort();
        assert_eq!(all, vec![0, 1, 2], "one each while all are busy");
        sim.done(&mut lc, b);
        assert_eq!(
            sim.pick(&mut lc, |_| Fit::Yes),
            Some(b),
            "the one that became idle"
        );
    }

    #[test]
    fn relative_to_weight() {
        // Weight 3 takes three concurrent connections for every one of weight 1.
        let sim = Sim::new(2);
        let mut lc = LeastConn::new(&[3, 1]);
        let mut count = [0; 2];
        for _ in 0..8 {
            count[sim.pick(&mut lc, |_| Fit::Yes).unwrap()] += 1;
        }
        assert_eq!(count, [6, 2]);
    }

    #[test]
    fn ties_rotate_by_weight() {
        // Requests finish before the next one: every pick is a tie at zero connections.
        let sim = Sim::new(3);
        let mut lc = LeastConn::new(&[2, 1, 1]);
        let mut count = [0; 3];
        let mut seq = vec![];
        for _ in 0..40 {
            let i = sim.pick(&mut lc, |_| Fit::Yes).unwrap();
            sim.done(&mut lc, i);
            count[i] += 1;
            seq.push(i);
        }
        assert_eq!(count, [20, 10, 10]);
        // Smooth: never the same single-weight peer twice in a row.
        for w in seq.windows(2) {
            assert!(!(w[0] == w[1] && w[0] != 0), "{seq:?}");
        }
    }

    #[test]
    fn sees_other_workers_counts() {
        let sim = Sim::new(2);
        let mut lc = LeastConn::new(&[1, 1]);
        // Another worker opens 5 connections to peer 0 behind our back.
        sim.active.borrow_mut()[0] = 5;
        assert_eq!(sim.pick(&mut lc, |_| Fit::Yes), Some(1));
        assert_eq!(sim.pick(&mut lc, |_| Fit::Yes), Some(1));
    }

    #[test]
    fn skips_and_sets_aside() {
        let sim = Sim::new(3);
        let mut lc = LeastConn::new(&[1, 1, 1]);
        // Peer 0 already tried for this request: skipped once, then back.
        assert_eq!(
            sim.pick(&mut lc, |i| if i == 0 { Fit::NotNow } else { Fit::Yes }),
            Some(1)
        );
        sim.done(&mut lc, 1);
        // Peer 0 has chosen 0 times, peers 1 has 1: peer 0 comes first again.
        assert_eq!(sim.pick(&mut lc, |_| Fit::Yes), Some(0));
        sim.done(&mut lc, 0);
        // Peer 2 unhealthy: set aside, and not even asked again until a refresh.
        let mut asked = vec![];
        for _ in 0..4 {
            let i = sim
                .pick(&mut lc, |i| {
                    asked.push(i);
                    if i == 2 {
                        Fit::Unavailable
                    } else {
                        Fit::Yes
                    }
                })
                .unwrap();
            assert_ne!(i, 2);
            sim.done(&mut lc, i);
        }
        assert_eq!(asked.iter().filter(|&&i| i == 2).count(), 1);
        lc.refresh(|i| sim.get(i), 1000);
        assert_eq!(
            sim.pick(&mut lc, |_| Fit::Yes),
            Some(2),
            "back after refresh"
        );
    }

    #[test]
    fn all_unavailable_and_empty() {
        let sim = Sim::new(2);
        let mut lc = LeastConn::new(&[1, 1]);
        assert_eq!(sim.pick(&mut lc, |_| Fit::NotNow), None);
        assert!(
            sim.pick(&mut lc, |_| Fit::Yes).is_some(),
            "NotNow is restored"
        );
        assert_eq!(sim.pick(&mut lc, |_| Fit::Unavailable), None);
        let mut none = LeastConn::new(&[0, 0]);
        assert_eq!(none.pick(|_| 0, |_| Fit::Yes, 0), None);
        let mut empty = LeastConn::new(&[]);
        assert_eq!(empty.pick(|_| 0, |_| Fit::Yes, 0), None);
    }

    #[test]
    fn many_peers_distribution() {
        let n = 1000;
        let sim = Sim::new(n);
        let weights: Vec<u32> = (0..n).map(|i| if i % 10 == 0 { 2 } else { 1 }).collect();
        let mut lc = LeastConn::new(&weights);
        let mut count = vec![0; n];
        for _ in 0..11_000 {
            let i = sim.pick(&mut lc, |i| {
                if i % 7 == 3 {
                    Fit::Unavailable
                } else {
                    Fit::Yes
                }
            });
            let i = i.unwrap();
            sim.done(&mut lc, i);
            count[i] += 1;
        }
        for i in 0..n {
            if i % 7 == 3 {
                assert_eq!(count[i], 0);
            } else {
                let w = weights[i] as i64;
                // 11,000 picks over a total weight of about 1,100 - 157: ~11.7 per weight unit.
                assert!(
                    (count[i] as i64 - 12 * w).abs() <= 2 * w,
                    "peer {i}: {}",
                    count[i]
                );
            }
        }
    }

    #[test]
    fn a_peer_back_from_an_outage_gets_its_share_at_once() {
        // Peer 2 is unavailable for 3,000 sequential picks (refreshes in between), then back.
        let sim = Sim::new(3);
        let mut lc = LeastConn::new(&[1, 1, 1]);
        let mut now = 0;
        for _ in 0..3000 {
            now += 1;
            let i = lc
                .pick(
                    |i| sim.get(i),
                    |i| if i == 2 { Fit::Unavailable } else { Fit::Yes },
                    now,
                )
                .unwrap();
            assert_ne!(i, 2);
        }
        let mut count = [0; 3];
        for _ in 0..300 {
            now += 1;
            count[lc.pick(|i| sim.get(i), |_| Fit::Yes, now).unwrap()] += 1;
        }
        for c in count {
            assert!((98..=102).contains(&c), "{count:?}");
        }
    }

    #[test]
    fn virtual_times_stay_bounded_while_a_peer_is_busy() {
        // Peer 0 always holds one more connection than the others, so it never ties with them
        // and is never picked; the others' virtual times must not run away from its (they
        // would saturate and then every tie would go to the lowest index).
        let sim = Sim::new(3);
        sim.active.borrow_mut()[0] = 1;
        let mut lc = LeastConn::new(&[1, 1, 1]);
        let mut count = [0; 3];
        for now in 0..10_000 {
            let i = lc.pick(|i| sim.get(i), |_| Fit::Yes, now).unwrap();
            lc.set_active(i, sim.get(i));
            count[i] += 1;
            let spread = lc.vtime.iter().max().unwrap() - lc.vtime.iter().min().unwrap();
            // At most the picks between two rebuilds (64 here) plus two strides.
            assert!(
                spread <= 66 * stride(1),
                "spread {spread} after {now} picks"
            );
        }
        assert_eq!(count, [0, 5000, 5000]);
    }
}
