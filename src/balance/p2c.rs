//! Power of two random choices, weighted: draw two peers at random (in proportion to their
//! weights, O(1) with an alias table), and send the request to the one with the lower load
//! score. The caller supplies the comparison; the module compares active connections times the
//! moving average of the response time (see `score_less`), so a slow peer gets less traffic,
//! while a peer with no measurement yet is compared by its connections alone and is not
//! flooded.

/// Vose's alias table: O(1) weighted sampling.
#[derive(Debug, Clone)]
struct Alias {
    /// Acceptance threshold of each column, scaled to 2^32.
    prob: Vec<u64>,
    alias: Vec<u32>,
}

impl Alias {
    fn new(weights: &[u32]) -> Option<Alias> {
        let n = weights.len();
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if n == 0 || total == 0 {
            return None;
        }
        // Scaled so that the average column is exactly 2^32.
        let one: u128 = 1 << 32;
        let mut scaled: Vec<u128> = weights
            .iter()
            .map(|&w| u128::from(w) * one * n as u128 / u128::from(total))
            .collect();
        let mut prob = vec![one as u64; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < one);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s] as u64;
            alias[s] = l as u32;
            scaled[l] = scaled[l] + scaled[s] - one;
            if scaled[l] < one {
                large.pop();
                small.push(l);
            }
        }
        // Rounding leftovers accept their own column.
        for i in small.into_iter().chain(large) {
            prob[i] = one as u64;
        }
        Some(Alias { prob, alias })
    }

    fn sample(&self, r: u64) -> usize {
        let n = self.prob.len() as u64;
        let col = (((r >> 32) * n) >> 32) as usize;
        if (r & 0xffff_ffff) < self.prob[col] {
            col
        } else {
            self.alias[col] as usize
        }
    }
}

#[derive(Debug, Clone)]
pub struct P2c {
    alias: Option<Alias>,
    weights: Vec<u32>,
    positive: usize,
    rng: u64,
}

/// Draws that may fail before falling back to a scan.
const ATTEMPTS: usize = 8;

impl P2c {
    /// `weights[i]` = 0 leaves peer `i` out. `seed` should differ per worker.
    pub fn new(weights: &[u32], seed: u64) -> P2c {
        P2c {
            alias: Alias::new(weights),
            weights: weights.to_vec(),
            positive: weights.iter().filter(|&&w| w > 0).count(),
            rng: seed | 1,
        }
    }

    #[cfg(test)]
    fn next(&mut self) -> u64 {
        next_random(&mut self.rng)
    }

    /// Gives this copy its own random sequence (each worker calls it after the fork).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = seed | 1;
    }

    /// Picks one of two weighted random peers that `usable` accepts, the one for which
    /// `less(a, b)` says it is less loaded. Allocates nothing.
    pub fn pick(
        &mut self,
        mut usable: impl FnMut(usize) -> bool,
        less: impl Fn(usize, usize) -> bool,
    ) -> Option<usize> {
        let alias = self.alias.as_ref()?;
        let rng = &mut self.rng;
        let n = alias.prob.len();
        for _ in 0..ATTEMPTS {
            let a = alias.sample(next_random(rng));
            let mut b = alias.sample(next_random(rng));
            if self.positive > 1 {
                for _ in 0..16 {
                    if b != a {
                        break;
                    }
                    b = alias.sample(next_random(rng));
                }
                if b == a {
                    // Practically only with one dominant weight: take the next peer.
                    b = (1..n)
                        .map(|k| (a + k) % n)
                        .find(|&i| self.weights[i] > 0)
                        .unwrap_or(a);
                }
            }
            match (usable(a), b != a && usable(b)) {
                (true, true) => return Some(if less(b, a) { b } else { a }),
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => continue,
            }
        }
        // Most peers are unusable: look at each once, from a random place.
        let start = (next_random(rng) % n as u64) as usize;
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.weights[i] > 0 && usable(i))
    }
}

/// xorshift64*.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Response times below this are one tick of nginx's millisecond clock: equal for p2c.
pub const RESOLUTION_US: u64 = 1000;

/// The load comparison of `p2c`: `(active + 1) × average response time`, lower wins; times
/// below the clock's resolution count as equal, so equally fast peers tie (and a tie goes to
/// the first draw, which follows the weights). A peer without a measurement yet (`None`) is
/// compared on connections alone.
pub fn score_less(a: (u32, Option<u64>), b: (u32, Option<u64>)) -> bool {
    match (a.1, b.1) {
        (Some(ta), Some(tb)) => {
            u128::from(a.0 + 1) * u128::from(ta.max(RESOLUTION_US))
                < u128::from(b.0 + 1) * u128::from(tb.max(RESOLUTION_US))
        }
        _ => a.0 < b.0,
    }
}

/// Folds a response time into a moving average whose weight depends on the time since the
/// previous sample: a sample `dt` after the last gets weight `dt / (dt + decay)` (a cheap
/// stand-in for `1 - exp(-dt/decay)`, exact at both ends), at least 1/50. Integer arithmetic
/// only: this runs for every response.
pub fn ewma(old: Option<u64>, sample_us: u64, dt_ms: u64, decay_ms: u64) -> u64 {
    // Bounds that keep the products within 64 bits (times up to ~5 hours, gaps up to a day).
    const MAX_US: u64 = 1 << 34;
    const MAX_MS: u64 = 1 << 26;
    let sample = sample_us.min(MAX_US);
    match old {
        None => sample,
        Some(old) => {
            let old = old.min(MAX_US);
            let decay = decay_ms.clamp(1, MAX_MS);
            let dt = dt_ms.clamp(decay / 50 + 1, MAX_MS);
            if sample >= old {
                old + (sample - old) * dt / (dt + decay)
            } else {
                old - (old - sample) * dt / (dt + decay)
            }
        }
    }
}

/// A moving average as seen `idle_ms` after its last sample: faded by `decay / (decay + idle)`
/// (see `ewma`), so that a peer that was slow once is tried again after a while.
pub fn faded(t_us: u64, idle_ms: u64, decay_ms: u64) -> u64 {
    if idle_ms == 0 {
        return t_us;
    }
    let decay = decay_ms.clamp(1, 1 << 26);
    t_us.min(1 << 34) * decay / (decay + idle_ms.min(1 << 40))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_samples_in_proportion() {
        let w = [5u32, 1, 0, 4];
        let a = Alias::new(&w).unwrap();
        let mut count = [0u32; 4];
        let mut rng = P2c::new(&w, 42);
        for _ in 0..100_000 {
            count[a.sample(rng.next())] += 1;
        }
        assert_eq!(count[2], 0);
        for (i, &wi) in w.iter().enumerate() {
            let want = 100_000.0 * f64::from(wi) / 10.0;
            assert!(
                (f64::from(count[i]) - want).abs() < 1500.0,
                "{i}: {}",
                count[i]
            );
        }
    }

    #[test]
    fn prefers_the_less_loaded_of_two() {
        let mut p = P2c::new(&[1, 1], 7);
        // Peer 1 is always less loaded: with two peers both are drawn every time.
        for _ in 0..100 {
            assert_eq!(p.pick(|_| true, |a, b| a == 1 && b == 0), Some(1));
        }
    }

    #[test]
    fn slow_peer_gets_less_traffic() {
        // Three peers, one ten times slower; requests take the response time, so the slow one
        // also holds more connections. Simulate by scoring with fixed loads.
        let times = [1000u64, 1000, 10_000];
        let active = [2u32, 2, 4];
        let mut p = P2c::new(&[1, 1, 1], 99);
        let mut count = [0; 3];
        for _ in 0..30_000 {
            let i = p
                .pick(
                    |_| true,
                    |a, b| score_less((active[a], Some(times[a])), (active[b], Some(times[b]))),
                )
                .unwrap();
            count[i] += 1;
        }
        // The slow peer only wins when drawn against itself, which never happens: 0.
        assert!(count[2] < 30_000 / 5, "{count:?}");
    }

    #[test]
    fn unusable_peers_and_fallback() {
        let mut p = P2c::new(&[1; 100], 3);
        for _ in 0..1000 {
            assert_eq!(p.pick(|i| i == 37, |_, _| false), Some(37));
        }
        assert_eq!(p.pick(|_| false, |_, _| false), None);
        let mut none = P2c::new(&[0, 0], 1);
        assert_eq!(none.pick(|_| true, |_, _| false), None);
        let mut one = P2c::new(&[0, 3], 1);
        assert_eq!(one.pick(|_| true, |_, _| false), Some(1));
        assert_eq!(one.pick(|i| i == 0, |_, _| false), None);
    }

    #[test]
    fn weighted_distribution_when_idle() {
        let mut p = P2c::new(&[3, 1], 11);
        let mut count = [0; 2];
        for _ in 0..40_000 {
            // Equal load: `less` never prefers b, so the first draw wins.
            count[p.pick(|_| true, |_, _| false).unwrap()] += 1;
        }
        // With distinct draws forced, peer 0 wins when drawn first: 3/4 of the time.
        assert!(
            (count[0] as f64 / 40_000.0 - 0.75).abs() < 0.02,
            "{count:?}"
        );
    }

    #[test]
    fn scores() {
        assert!(score_less((0, Some(1000)), (1, Some(1000))));
        assert!(score_less((3, Some(1000)), (0, Some(5000))));
        assert!(!score_less((3, Some(1000)), (0, Some(1000))));
        // Below the clock's resolution: a tie either way.
        assert!(!score_less((0, Some(10)), (0, Some(900))));
        assert!(!score_less((0, Some(900)), (0, Some(10))));
        // Unknown time: connections only.
        assert!(score_less((0, None), (1, Some(1))));
        assert!(!score_less((2, None), (1, Some(1))));
    }

    #[test]
    fn ewma_decay() {
        assert_eq!(ewma(None, 500, 0, 1000), 500);
        // A sample long after the last nearly replaces it.
        let v = ewma(Some(500), 2000, 60_000, 1000);
        assert!((1970..=2000).contains(&v), "{v}");
        // A sample right after barely moves it.
        let v = ewma(Some(500), 2000, 1, 1000);
        assert!((500..600).contains(&v), "{v}");
        // One decay period: half of the way (1 - e^-1 = 63% for a true exponential).
        let v = ewma(Some(0), 1000, 1000, 1000);
        assert_eq!(v, 500);
        // Downwards too.
        assert_eq!(ewma(Some(1000), 0, 1000, 1000), 500);
        assert_eq!(faded(1000, 0, 1000), 1000);
        assert_eq!(faded(1000, 1000, 1000), 500);
        assert_eq!(faded(1000, 9000, 1000), 100);
    }
}
