//! Smooth weighted round-robin, nginx's algorithm, made cheap per pick.
//!
//! nginx walks every peer on every pick: each peer's current weight grows by its weight, the
//! largest wins and gives back the total. For weights 5, 1, 1 that yields `a a b a c a a`, then
//! repeats. The sequence is periodic with period `sum(weights)` (after dividing by their gcd),
//! so we run nginx's walk once, when the configuration is loaded, and store one period as a
//! schedule. A pick then reads the next schedule entry, skipping entries whose peer cannot be
//! taken right now (down, failed, full, or already tried for this request).
//!
//! Properties kept from nginx: with every peer available the order is exactly nginx's; over any
//! `sum(weights)` consecutive picks each available peer is chosen exactly `weight` times, and
//! with some peers unavailable the same holds for the available ones over `sum` of their
//! weights (the filtered schedule is periodic with that period). What changes: nginx lowers a
//! failing peer's effective weight gradually, and a retry walks only the peers not tried yet;
//! with the schedule a peer is either available or skipped. So lists of up to
//! [`WALK_MAX_PEERS`] peers keep nginx's walk itself ([`SmoothWrr::walk`]), where it costs what
//! it costs nginx, and the schedule serves the large ones.
//!
//! Building a period with nginx's walk costs `peers × period` steps. Past [`MAX_EXACT_WORK`]
//! (large upstreams: 1,000 peers of weight 1 are a million steps) the period is built by stride
//! scheduling instead, in `period × log(peers)`: peer `i`'s `k`-th turn comes at virtual time
//! `(2k+1)/(2·weight)`. The order then differs from nginx's, but the window property above
//! holds exactly (the turns before virtual time 1 are exactly `weight` per peer) and it is just
//! as smooth. A schedule longer than [`MAX_SCHEDULE`] entries (huge, coprime weights) is not
//! stored; such an upstream falls back to nginx's walk over all peers on each pick.

/// The longest schedule kept in memory, in entries (4 bytes each).
pub const MAX_SCHEDULE: u64 = 1 << 20;
/// Largest `peers × period` for which the schedule follows nginx's exact order.
pub const MAX_EXACT_WORK: u64 = 4_000_000;

#[derive(Debug, Clone)]
pub struct SmoothWrr {
    mode: Mode,
}

/// Tagged (`repr(u8)`) for a cheap match on every pick, as `Selector`.
#[derive(Debug, Clone)]
#[repr(u8)]
enum Mode {
    /// No peer with a positive weight.
    Empty,
    Schedule {
        order: Vec<u32>,
        next: usize,
        /// The weights' gcd: each peer has `weight / gcd` entries in `order`.
        gcd: u32,
    },
    /// nginx's own walk: each peer's current weight grows by its effective weight, the
    /// largest wins and gives back the total; a failure lowers the effective weight, which
    /// then grows back by one per walk.
    Walk { peers: Vec<WalkPeer> },
}

/// One peer in nginx's walk. Weight 0 leaves the peer out.
#[derive(Debug, Clone, Copy)]
struct WalkPeer {
    weight: i64,
    current: i64,
    effective: i64,
}

fn walk_peers(weights: &[u32]) -> Vec<WalkPeer> {
    weights
        .iter()
        .map(|&w| WalkPeer {
            weight: i64::from(w),
            current: 0,
            effective: i64::from(w),
        })
        .collect()
}

/// Upstreams (each peer list: primaries, backups) of up to this many peers pick by nginx's walk
/// itself: the same order as nginx also when peers fail and requests are retried (nginx lowers a
/// failed peer's effective weight, and a retry walks the peers not tried yet), at the cost of
/// nginx's own O(peers) per pick. Larger lists read the precomputed schedule in O(1).
pub const WALK_MAX_PEERS: usize = 64;

impl SmoothWrr {
    /// `weights[i]` is peer `i`'s weight; 0 leaves the peer out (e.g. a `down` server).
    pub fn new(weights: &[u32]) -> SmoothWrr {
        let g = weights.iter().fold(0u32, |g, &w| gcd(g, w));
        if g == 0 {
            return SmoothWrr { mode: Mode::Empty };
        }
        let reduced: Vec<u32> = weights.iter().map(|w| w / g).collect();
        let period: u64 = reduced.iter().map(|&w| u64::from(w)).sum();
        if period > MAX_SCHEDULE {
            return SmoothWrr::walk(weights);
        }
        let order = if reduced.iter().all(|&w| w == 1) {
            // All weights equal: nginx's walk takes the peers in order (each one's current
            // weight is then the lowest until the others had their turn).
            (0..period as u32).collect()
        } else if period * reduced.len() as u64 <= MAX_EXACT_WORK {
            let mut peers = walk_peers(&reduced);
            let mut order = Vec::with_capacity(period as usize);
            for _ in 0..period {
                let i = walk_step(&mut peers, |_| true).expect("positive total weight");
                order.push(i as u32);
            }
            order
        } else {
            stride_schedule(&reduced, period as usize)
        };
        SmoothWrr {
            mode: Mode::Schedule {
                order,
                next: 0,
                gcd: g,
            },
        }
    }

    /// The schedule of a changed peer list, edited from this one rather than built anew (for
    /// upstreams whose peers follow DNS: a change costs a pass over the period, not
    /// `peers × period` steps of nginx's walk). `origin[i]` is new peer `i`'s index in the old
    /// list, if it was there; `weights` are the new list's. Entries of peers that left are
    /// dropped, the others renumbered, and each new peer gets `weight / gcd` entries spread
    /// evenly over the period, so over any period each available peer is still chosen exactly
    /// `weight / gcd` times. `None` when this is not a schedule, a kept peer's weight changed,
    /// the gcd changed, or the new list is for the walk: the caller builds anew.
    pub fn edit(
        &self,
        origin: &[Option<usize>],
        old_weights: &[u32],
        weights: &[u32],
    ) -> Option<SmoothWrr> {
        let Mode::Schedule {
            order,
            next,
            gcd: g,
        } = &self.mode
        else {
            return None;
        };
        if weights.len() <= WALK_MAX_PEERS || weights.len() != origin.len() {
            return None;
        }
        let new_gcd = weights.iter().fold(0u32, |a, &w| gcd(a, w));
        if new_gcd != *g {
            return None;
        }
        let mut remap = vec![u32::MAX; old_weights.len()];
        let mut joined = Vec::new();
        for (i, o) in origin.iter().enumerate() {
            match *o {
                Some(j) if old_weights.get(j) == Some(&weights[i]) => remap[j] = i as u32,
                Some(_) => return None,
                None => joined.push(i),
            }
        }
        let period: u64 = weights.iter().map(|&w| u64::from(w / new_gcd)).sum();
        if period > MAX_SCHEDULE {
            return None;
        }
        let mut out: Vec<u32> = Vec::with_capacity(period as usize);
        let mut at = 0;
        for (k, &i) in order.iter().enumerate() {
            if k == *next {
                at = out.len();
            }
            if let Some(&n) = remap.get(i as usize) {
                if n != u32::MAX {
                    out.push(n);
                }
            }
        }
        for i in joined {
            let turns = (weights[i] / new_gcd) as usize;
            let len = out.len();
            // From the last turn back, so that earlier positions stay where computed.
            for t in (0..turns).rev() {
                let pos = (len * (2 * t + 1)) / (2 * turns);
                out.insert(pos, i as u32);
                if pos < at {
                    at += 1;
                }
            }
        }
        if out.is_empty() {
            return Some(SmoothWrr { mode: Mode::Empty });
        }
        let next = at.min(out.len() - 1);
        Some(SmoothWrr {
            mode: Mode::Schedule {
                order: out,
                next,
                gcd: new_gcd,
            },
        })
    }

    /// nginx's walk over all peers on every pick (see `WALK_MAX_PEERS`).
    pub fn walk(weights: &[u32]) -> SmoothWrr {
        if weights.iter().all(|&w| w == 0) {
            return SmoothWrr { mode: Mode::Empty };
        }
        SmoothWrr {
            mode: Mode::Walk {
                peers: walk_peers(weights),
            },
        }
    }

    /// Peer `i`'s attempt failed: as nginx does, its effective weight drops by
    /// `weight / max_fails` (not below 0) and grows back by one per pick. Only the walk keeps
    /// effective weights; the schedule skips a peer only while it is unavailable.
    pub fn failed(&mut self, i: usize, max_fails: u32) {
        if let Mode::Walk { peers } = &mut self.mode {
            if let Some(p) = peers.get_mut(i) {
                if let Some(drop) = p.weight.checked_div(i64::from(max_fails)) {
                    p.effective = (p.effective - drop).max(0);
                }
            }
        }
    }

    /// Length of the stored period (0 when walking or empty).
    pub fn period(&self) -> usize {
        match &self.mode {
            Mode::Schedule { order, .. } => order.len(),
            _ => 0,
        }
    }

    /// Picks the next peer for which `usable` says yes, or `None` when there is none.
    /// Allocates nothing; takes no lock. Inlined into the caller, so that `usable` is too:
    /// the walk calls it for every peer on every pick.
    #[inline(always)]
    pub fn pick(&mut self, mut usable: impl FnMut(usize) -> bool) -> Option<usize> {
        match &mut self.mode {
            Mode::Empty => None,
            Mode::Schedule { order, next, .. } => {
                let len = order.len();
                for _ in 0..len {
                    let i = order[*next] as usize;
                    *next += 1;
                    if *next == len {
                        *next = 0;
                    }
                    if usable(i) {
                        return Some(i);
                    }
                }
                None
            }
            Mode::Walk { peers } => walk_step(peers, usable),
        }
    }
}

/// One step of nginx's smooth weighted round-robin over the peers `usable` accepts: ties go to
/// the lowest index, as in nginx. A peer's current weight grows by its effective weight, which
/// grows back by one towards its weight each time the peer is considered.
#[inline(always)]
fn walk_step(peers: &mut [WalkPeer], mut usable: impl FnMut(usize) -> bool) -> Option<usize> {
    let mut total = 0i64;
    // No peer yet: a current weight never gets this low (it stays above minus the total).
    let mut best = usize::MAX;
    let mut best_current = i64::MIN;
    for (i, p) in peers.iter_mut().enumerate() {
        if p.weight == 0 || !usable(i) {
            continue;
        }
        p.current += p.effective;
        total += p.effective;
        if p.effective < p.weight {
            p.effective += 1;
        }
        if p.current > best_current {
            best = i;
            best_current = p.current;
        }
    }
    let b = peers.get_mut(best)?;
    b.current -= total;
    Some(best)
}

/// One period by stride scheduling: repeatedly the peer whose next turn `(2k+1)/(2w)` is the
/// earliest (ties to the lower index).
fn stride_schedule(weights: &[u32], period: usize) -> Vec<u32> {
    use std::cmp::{Ordering, Reverse};
    use std::collections::BinaryHeap;

    #[derive(PartialEq, Eq)]
    struct Turn {
        k: u64,
        w: u32,
        i: u32,
    }
    impl Ord for Turn {
        fn cmp(&self, o: &Self) -> Ordering {
            let a = u128::from(2 * self.k + 1) * u128::from(o.w);
            let b = u128::from(2 * o.k + 1) * u128::from(self.w);
            a.cmp(&b).then(self.i.cmp(&o.i))
        }
    }
    impl PartialOrd for Turn {
        fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }
    let mut heap: BinaryHeap<Reverse<Turn>> = weights
        .iter()
        .enumerate()
        .filter(|(_, &w)| w > 0)
        .map(|(i, &w)| {
            Reverse(Turn {
                k: 0,
                w,
                i: i as u32,
            })
        })
        .collect();
    let mut order = Vec::with_capacity(period);
    while order.len() < period {
        let Some(Reverse(mut t)) = heap.pop() else {
            break;
        };
        order.push(t.i);
        t.k += 1;
        heap.push(Reverse(t));
    }
    order
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx's algorithm as it runs in nginx: a walk over all available peers per pick.
    fn nginx_sequence(weights: &[u32], n: usize) -> Vec<usize> {
        let mut peers = walk_peers(weights);
        (0..n)
            .map(|_| walk_step(&mut peers, |_| true).unwrap())
            .collect()
    }

    fn picks(s: &mut SmoothWrr, n: usize, usable: impl Fn(usize) -> bool) -> Vec<usize> {
        (0..n).map(|_| s.pick(&usable).unwrap()).collect()
    }

    #[test]
    fn equal_weights_follow_nginx_in_order() {
        // Beyond the walk's size, equal weights take the shortcut; weights 3 reduce to 1.
        for (n, w) in [(65usize, 1u32), (100, 3), (3000, 2)] {
            let weights = vec![w; n];
            let mut s = SmoothWrr::new(&weights);
            assert_eq!(
                picks(&mut s, 2 * n, |_| true),
                nginx_sequence(&weights, 2 * n)
            );
        }
        // Not when a weight is 0 (a `down` server) and the sum happens to equal the count.
        let mut weights = vec![1u32; 66];
        weights[0] = 0;
        weights[1] = 2;
        let mut s = SmoothWrr::new(&weights);
        assert_eq!(picks(&mut s, 132, |_| true), nginx_sequence(&weights, 132));
    }

    /// A small deterministic generator, so property tests need no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn five_one_one_is_nginx_order() {
        let mut s = SmoothWrr::new(&[5, 1, 1]);
        let seq = picks(&mut s, 21, |_| true);
        let letters: String = seq.iter().map(|&i| (b'a' + i as u8) as char).collect();
        assert_eq!(letters, "aabacaa".repeat(3));
    }

    #[test]
    fn same_order_as_nginx_for_many_weight_sets() {
        let sets: &[&[u32]] = &[
            &[1],
            &[1, 1],
            &[3, 2],
            &[5, 1, 1],
            &[2, 4, 6],
            &[10, 1],
            &[1, 2, 3, 4, 5],
            &[7, 7, 7],
            &[100, 1, 50],
            &[3, 0, 2],
        ];
        for w in sets {
            let total: u32 = w.iter().sum();
            let n = total as usize * 3;
            let mut s = SmoothWrr::new(w);
            assert_eq!(
                picks(&mut s, n, |_| true),
                nginx_sequence(w, n),
                "weights {w:?}"
            );
        }
    }

    #[test]
    fn gcd_reduction_keeps_order() {
        let mut a = SmoothWrr::new(&[10, 20, 30]);
        let mut b = SmoothWrr::new(&[1, 2, 3]);
        assert_eq!(a.period(), 6);
        assert_eq!(picks(&mut a, 30, |_| true), picks(&mut b, 30, |_| true));
    }

    #[test]
    fn window_property_random_weights_and_up_sets() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300 {
            let n = 1 + rng.below(12) as usize;
            let weights: Vec<u32> = (0..n).map(|_| 1 + rng.below(9) as u32).collect();
            let up: Vec<bool> = (0..n).map(|_| rng.below(4) != 0).collect();
            let mut s = SmoothWrr::new(&weights);
            let window: u32 = (0..n).filter(|&i| up[i]).map(|i| weights[i]).sum();
            if window == 0 {
                assert_eq!(s.pick(|i| up[i]), None);
                continue;
            }
            // Start somewhere in the middle of the schedule.
            for _ in 0..rng.below(50) {
                s.pick(|i| up[i]);
            }
            let seq = picks(&mut s, window as usize * 4, |i| up[i]);
            for start in 0..seq.len() - window as usize {
                let mut count = vec![0u32; n];
                for &i in &seq[start..start + window as usize] {
                    count[i] += 1;
                }
                for i in 0..n {
                    let want = if up[i] { weights[i] } else { 0 };
                    assert_eq!(
                        count[i], want,
                        "weights {weights:?} up {up:?} start {start}"
                    );
                }
            }
        }
    }

    #[test]
    fn all_down_and_single_peer() {
        let mut s = SmoothWrr::new(&[3, 2]);
        assert_eq!(s.pick(|_| false), None);
        let mut one = SmoothWrr::new(&[4]);
        assert_eq!(picks(&mut one, 5, |_| true), vec![0; 5]);
        assert_eq!(one.pick(|_| false), None);
        let mut empty = SmoothWrr::new(&[0, 0]);
        assert_eq!(empty.pick(|_| true), None);
        assert_eq!(SmoothWrr::new(&[]).pick(|_| true), None);
    }

    #[test]
    fn tried_peers_are_skipped() {
        let mut s = SmoothWrr::new(&[5, 1, 1]);
        let mut tried = [false; 3];
        let mut got = vec![];
        while let Some(i) = s.pick(|i| !tried[i]) {
            tried[i] = true;
            got.push(i);
        }
        got.sort();
        assert_eq!(got, vec![0, 1, 2]);
    }

    #[test]
    fn large_upstreams_use_stride_schedules_with_the_window_property() {
        // 3,000 peers: too much work for nginx's exact walk.
        let weights: Vec<u32> = (0..3000).map(|i| 1 + (i % 3) as u32).collect();
        let total: u32 = weights.iter().sum();
        let mut s = SmoothWrr::new(&weights);
        assert_eq!(s.period(), total as usize);
        let seq = picks(&mut s, total as usize * 2, |_| true);
        for start in [0, 1, 777, total as usize - 1] {
            let mut count = vec![0u32; weights.len()];
            for &i in &seq[start..start + total as usize] {
                count[i] += 1;
            }
            assert_eq!(count, weights, "window at {start}");
        }
        // Smooth: a weight-3 peer's turns are spread, not back to back.
        let pos: Vec<usize> = seq[..total as usize]
            .iter()
            .enumerate()
            .filter(|(_, &i)| i == 2)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(pos.len(), 3);
        assert!(pos[1] - pos[0] > 1000 && pos[2] - pos[1] > 1000, "{pos:?}");
    }

    #[test]
    fn huge_coprime_weights_fall_back_to_walking() {
        let w = [1_000_003u32, 999_983, 7];
        let mut s = SmoothWrr::new(&w);
        assert_eq!(s.period(), 0);
        assert_eq!(picks(&mut s, 2000, |_| true), nginx_sequence(&w, 2000));
    }

    /// nginx's walk with its effective weights, step by step as ngx_http_upstream_get_peer
    /// and the failure branch of ngx_http_upstream_free_round_robin_peer describe it, written
    /// out independently of `walk_step` to compare against.
    struct Nginx {
        weight: Vec<i64>,
        current: Vec<i64>,
        effective: Vec<i64>,
    }
    impl Nginx {
        fn new(w: &[u32]) -> Nginx {
            let weight: Vec<i64> = w.iter().map(|&x| i64::from(x)).collect();
            Nginx {
                current: vec![0; w.len()],
                effective: weight.clone(),
                weight,
            }
        }
        fn get(&mut self, skip: impl Fn(usize) -> bool) -> Option<usize> {
            let (mut total, mut best) = (0, None::<usize>);
            for i in 0..self.weight.len() {
                if skip(i) {
                    continue;
                }
                self.current[i] += self.effective[i];
                total += self.effective[i];
                if self.effective[i] < self.weight[i] {
                    self.effective[i] += 1;
                }
                if best.is_none_or(|b| self.current[i] > self.current[b]) {
                    best = Some(i);
                }
            }
            let b = best?;
            self.current[b] -= total;
            Some(b)
        }
        fn failed(&mut self, i: usize, max_fails: i64) {
            if max_fails > 0 {
                self.effective[i] = (self.effective[i] - self.weight[i] / max_fails).max(0);
            }
        }
    }

    #[test]
    fn the_walk_follows_nginx_through_failures_and_retries() {
        // Peer 0 is dead: every attempt on it fails and the request is retried on the others.
        // With max_fails=0 (never marked failed) and with max_fails=1 or 3 (each failure
        // lowers its effective weight by weight/max_fails; the caller would also take it out
        // for fail_timeout, left out here to see the weights alone), over random weights: the
        // same peers, in the same order.
        let mut rng = Rng(7);
        for round in 0..200 {
            let n = 2 + (rng.next() % 5) as usize;
            let w: Vec<u32> = (0..n).map(|_| 1 + (rng.next() % 10) as u32).collect();
            let max_fails = [0, 1, 3][round % 3];
            let mut ours = SmoothWrr::walk(&w);
            let mut theirs = Nginx::new(&w);
            for _ in 0..50 {
                let mut tried = vec![false; n];
                loop {
                    let a = ours.pick(|i| !tried[i]);
                    let b = theirs.get(|i| tried[i]);
                    assert_eq!(a, b, "weights {w:?} max_fails {max_fails}");
                    let Some(i) = a else { break };
                    tried[i] = true;
                    if i != 0 {
                        break;
                    }
                    ours.failed(i, max_fails as u32);
                    theirs.failed(i, max_fails);
                }
            }
        }
    }

    /// Shares per period of a schedule: how often each peer appears.
    fn shares(s: &SmoothWrr, n: usize) -> Vec<usize> {
        let Mode::Schedule { order, .. } = &s.mode else {
            panic!("not a schedule");
        };
        let mut c = vec![0; n];
        for &i in order {
            c[i as usize] += 1;
        }
        c
    }

    #[test]
    fn edits_keep_exact_shares_and_spread_newcomers() {
        let mut rng = Rng(7);
        // 200 peers of weights 2 and 4 (gcd 2): a schedule.
        let mut weights: Vec<u32> = (0..200).map(|i| if i % 3 == 0 { 4 } else { 2 }).collect();
        let mut s = SmoothWrr::new(&weights);
        for _ in 0..50 {
            // Drop a few, keep the rest in order, add a few at the end.
            let mut origin: Vec<Option<usize>> = Vec::new();
            let mut new_w = Vec::new();
            for (j, &w) in weights.iter().enumerate() {
                if rng.below(20) != 0 {
                    origin.push(Some(j));
                    new_w.push(w);
                }
            }
            let dropped = weights.len() - origin.len();
            for _ in 0..dropped as u64 + rng.below(3) {
                origin.push(None);
                new_w.push(if rng.below(2) == 0 { 2 } else { 6 });
            }
            let e = s.edit(&origin, &weights, &new_w).expect("an edit");
            let want: Vec<usize> = new_w.iter().map(|&w| (w / 2) as usize).collect();
            assert_eq!(shares(&e, new_w.len()), want);
            s = e;
            weights = new_w;
        }
        // A newcomer of weight 3 turns (6 / 2) is spread: its turns are a third of the period
        // apart, give or take one.
        let mut origin: Vec<Option<usize>> = (0..weights.len()).map(Some).collect();
        origin.push(None);
        let mut new_w = weights.clone();
        new_w.push(6);
        let e = s.edit(&origin, &weights, &new_w).unwrap();
        let Mode::Schedule { order, .. } = &e.mode else {
            panic!()
        };
        let pos: Vec<usize> = order
            .iter()
            .enumerate()
            .filter(|(_, &i)| i as usize == new_w.len() - 1)
            .map(|(k, _)| k)
            .collect();
        let third = order.len() / 3;
        assert_eq!(pos.len(), 3);
        assert!(
            pos.windows(2).all(|w| (w[1] - w[0]).abs_diff(third) <= 1),
            "{pos:?}"
        );
    }

    #[test]
    fn edits_refuse_what_they_cannot_do() {
        let weights = vec![1u32; 100];
        let s = SmoothWrr::new(&weights);
        let same: Vec<Option<usize>> = (0..100).map(Some).collect();
        // A kept peer's weight changed; the gcd changed; the walk; not a schedule.
        let mut w2 = weights.clone();
        w2[5] = 2;
        assert!(s.edit(&same, &weights, &w2).is_none());
        let doubled = vec![2u32; 100];
        let fresh: Vec<Option<usize>> = vec![None; 100];
        assert!(s.edit(&fresh, &weights, &doubled).is_none());
        assert!(s.edit(&same[..10], &weights, &weights[..10]).is_none());
        assert!(SmoothWrr::walk(&weights)
            .edit(&same, &weights, &weights)
            .is_none());
        // Nothing changed: the same schedule.
        let e = s.edit(&same, &weights, &weights).unwrap();
        assert_eq!(shares(&e, 100), vec![1; 100]);
    }
}
