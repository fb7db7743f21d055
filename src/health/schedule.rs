//! When a worker probes a peer: the lease rule, pure.
//!
//! Every worker has a timer per checked peer; the probe runs in the worker that moves the
//! peer's due time forward in shared memory (`PeerShared::take_lease`). With kept-alive probe
//! connections the worker that ran the last probe holds the peer's connection, so it goes first
//! and the others wait a grace period, after which any of them steps in (the last prober died,
//! exited or stalled). Times are nginx's monotonic milliseconds; sums saturate, because
//! configured times reach 2^63 - 1 ms.

/// The longest grace period, ms.
pub const MAX_GRACE_MS: u64 = 250;

/// How long this worker lets the last prober go first: nothing when it is the last prober
/// itself or when connections are not kept, else a quarter of the interval, at most 250 ms.
pub fn grace_ms(keepalive: bool, last_prober_is_me: bool, interval_ms: u64) -> u64 {
    if keepalive && !last_prober_is_me {
        (interval_ms / 4).min(MAX_GRACE_MS)
    } else {
        0
    }
}

/// `Some(wait)` while the peer is not yet this worker's to probe (its due time plus the grace
/// has not come); `None` when this worker may try to take the lease now.
pub fn wait_before_lease(now_ms: u64, due_ms: u64, grace_ms: u64) -> Option<u64> {
    let start = due_ms.saturating_add(grace_ms);
    (now_ms < start).then(|| start - now_ms)
}

/// The due time a worker that takes the lease sets: an interval (plus this worker's jitter)
/// from now.
pub fn next_due(now_ms: u64, interval_ms: u64, jitter_ms: u64) -> u64 {
    now_ms.saturating_add(interval_ms).saturating_add(jitter_ms)
}

/// How long to wait after another worker took the lease first (`due_ms` is the due time it
/// set): until that time plus the grace, at least 1 ms.
pub fn wait_after_lost_lease(now_ms: u64, due_ms: u64, grace_ms: u64) -> u64 {
    due_ms
        .saturating_add(grace_ms)
        .saturating_sub(now_ms)
        .max(1)
}

/// A due time that an earlier configuration set with a longer interval, as this one should
/// have it: `Some(now + interval)` when `due_ms` lies further out than this configuration ever
/// sets one (twice the interval plus the jitter: a lease may be taken a little early, and the
/// next due time counts from the due time then), so that a reload that shortens the interval
/// does not wait out the old one; `None` otherwise.
pub fn capped_due(now_ms: u64, due_ms: u64, interval_ms: u64, jitter_ms: u64) -> Option<u64> {
    let latest = next_due(now_ms, interval_ms.saturating_mul(2), jitter_ms);
    (due_ms > latest).then(|| now_ms.saturating_add(interval_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_interval_does_not_wait_out_the_old_one() {
        // Due in 30 s (interval 30 s before a reload), now 1 s: probed in 1 s.
        assert_eq!(capped_due(10_000, 40_000, 1000, 0), Some(11_000));
        // What this configuration sets itself stays: an interval plus jitter, or a lease
        // taken early (the next due counts from the due time).
        assert_eq!(capped_due(10_000, 11_500, 1000, 500), None);
        assert_eq!(capped_due(10_000, 12_100, 1000, 100), None);
        assert_eq!(capped_due(10_000, 12_101, 1000, 100), Some(11_000));
        // A longer interval than before: the old, nearer due time stands.
        assert_eq!(capped_due(10_000, 10_200, 30_000, 0), None);
        // Configured times reach 2^63 - 1 ms: nothing overflows.
        assert_eq!(capped_due(10_000, u64::MAX, u64::MAX / 2, u64::MAX), None);
        assert_eq!(capped_due(u64::MAX - 5, u64::MAX, 10, 0), None);
    }

    #[test]
    fn the_last_prober_goes_first() {
        // Interval 2 s: others wait 250 ms (a quarter would be 500), the last prober none.
        assert_eq!(grace_ms(true, true, 2000), 0);
        assert_eq!(grace_ms(true, false, 2000), 250);
        assert_eq!(grace_ms(true, false, 400), 100);
        // Without kept connections nobody has a reason to go first.
        assert_eq!(grace_ms(false, false, 2000), 0);
        // Due at 10,000: the last prober may take it at 10,000, another worker at 10,250.
        assert_eq!(wait_before_lease(10_000, 10_000, 0), None);
        assert_eq!(wait_before_lease(10_000, 10_000, 250), Some(250));
        assert_eq!(wait_before_lease(10_250, 10_000, 250), None);
        assert_eq!(wait_before_lease(9_000, 10_000, 0), Some(1000));
    }

    #[test]
    fn losing_the_lease_waits_for_the_next_due_time() {
        let next = next_due(10_000, 2000, 7);
        assert_eq!(next, 12_007);
        assert_eq!(wait_after_lost_lease(10_001, next, 250), 2256);
        // Never a zero wait (a timer of 0 would spin in the same event-loop turn).
        assert_eq!(wait_after_lost_lease(20_000, next, 0), 1);
    }

    #[test]
    fn huge_configured_times_saturate() {
        assert_eq!(next_due(5, u64::MAX - 1, 10), u64::MAX);
        assert_eq!(wait_before_lease(5, u64::MAX, 250), Some(u64::MAX - 5));
        assert_eq!(wait_after_lost_lease(5, u64::MAX, 250), u64::MAX - 5);
    }
}
