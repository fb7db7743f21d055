//! `lb_slow_start TIME`: a peer that becomes available again gets its share back gradually, its
//! weight ramping linearly from 10% to 100% over TIME (a cold cache or JIT does not get a full
//! share at once). Weights are integers: with slow start every peer's weight is scaled by
//! `STEPS` (which changes no method's choices: all of them depend only on weight ratios), and a
//! ramping peer's by 1..`STEPS`.

/// Steps of the ramp: 10%, 20%, ... 100%.
pub const STEPS: u32 = 10;

/// The ramp's step (1 to `STEPS`) of a peer whose ramp started at `start_ms` (0: none), at
/// `now_ms`, for a ramp of `duration_ms`. Times are nginx's monotonic milliseconds.
pub fn step(start_ms: u64, now_ms: u64, duration_ms: u64) -> u32 {
    if start_ms == 0 || duration_ms == 0 || now_ms >= start_ms.saturating_add(duration_ms) {
        return STEPS;
    }
    let elapsed = now_ms.saturating_sub(start_ms);
    // 10% at the start, then linear: 1 + 9 × elapsed / duration, rounded down.
    1 + ((u64::from(STEPS - 1) * elapsed) / duration_ms) as u32
}

/// The share of its weight a peer has now, while it ramps (`None` once at full weight).
pub fn factor(start_ms: u64, now_ms: u64, duration_ms: u64) -> Option<f64> {
    if start_ms == 0 || duration_ms == 0 || now_ms >= start_ms.saturating_add(duration_ms) {
        return None;
    }
    let elapsed = now_ms.saturating_sub(start_ms) as f64;
    Some(0.1 + 0.9 * elapsed / duration_ms as f64)
}

/// How often each worker looks at its peers' ramps, ms: twenty times per ramp, but not more
/// than every 100 ms nor less than every second.
pub fn evaluate_every_ms(duration_ms: u64) -> u64 {
    (duration_ms / 20).clamp(100, 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps() {
        assert_eq!(step(0, 5, 1000), STEPS);
        assert_eq!(step(100, 100, 1000), 1);
        assert_eq!(step(100, 211, 1000), 1);
        assert_eq!(step(100, 212, 1000), 2);
        assert_eq!(step(100, 600, 1000), 5);
        assert_eq!(step(100, 1099, 1000), 9);
        assert_eq!(step(100, 1100, 1000), STEPS);
        assert_eq!(factor(100, 1100, 1000), None);
        assert_eq!(factor(100, 100, 1000), Some(0.1));
        assert!((factor(100, 600, 1000).unwrap() - 0.55).abs() < 1e-9);
        assert_eq!(evaluate_every_ms(30_000), 1000);
        assert_eq!(evaluate_every_ms(4000), 200);
        assert_eq!(evaluate_every_ms(1000), 100);
    }
}
