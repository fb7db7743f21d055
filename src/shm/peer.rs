//! One peer's record in shared memory. Every field is an atomic, so any worker reads and updates
//! it without a lock, and a worker killed mid-update leaves nothing locked.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::balance::availability::{judge, Limits, Verdict};

/// Shared state of one peer. 64-byte aligned so that two peers never share a cache line.
#[repr(C, align(64))]
#[derive(Default)]
pub struct PeerShared {
    /// Identity: two independent 64-bit hashes of "upstream\0address"; both zero = never used.
    pub key_a: AtomicU64,
    pub key_b: AtomicU64,
    /// The configuration generation that last claimed this record.
    pub generation: AtomicU32,

    /// Passive failures counted in the current `fail_timeout` window.
    pub fails: AtomicU32,
    /// Connections to this peer in progress, over all workers.
    pub active: AtomicU32,
    /// When the peer was last checked (a failure, or a pick after `fail_timeout`), ms.
    pub checked_ms: AtomicU64,
    /// When the peer last failed, ms.
    pub accessed_ms: AtomicU64,

    /// Requests sent to this peer (each attempt counts).
    pub requests: AtomicU64,
    /// Passive failures in total.
    pub total_fails: AtomicU64,
    /// Times the peer was made unavailable by passive failures.
    pub unavail: AtomicU64,
}

/// What a failure did to the peer, so the caller can log a state change once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    Counted,
    /// This failure reached `max_fails`: the peer is now unavailable for `fail_timeout`.
    MadeUnavailable,
}

impl PeerShared {
    /// Passive-failure and `max_conns` verdict at `now_ms`.
    #[inline]
    pub fn verdict(&self, limits: &Limits, now_ms: u64) -> Verdict {
        judge(
            limits,
            self.fails.load(Relaxed),
            self.checked_ms.load(Relaxed),
            self.active.load(Relaxed),
            now_ms,
        )
    }

    /// Records that a request was sent to this peer. As in nginx, a pick made more than
    /// `fail_timeout` after the last check becomes the new check: a success after it clears the
    /// failure count, and for a failed peer only the one request that wins this exchange probes it.
    #[inline]
    pub fn on_pick(&self, limits: &Limits, now_ms: u64) {
        let checked = self.checked_ms.load(Relaxed);
        if now_ms.saturating_sub(checked) > limits.fail_timeout_ms {
            let _ = self
                .checked_ms
                .compare_exchange(checked, now_ms, Relaxed, Relaxed);
        }
        self.active.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
    }

    /// Records the end of an attempt.
    #[inline]
    pub fn on_done(&self, failed: bool, limits: &Limits, now_ms: u64) -> Option<FailOutcome> {
        // Saturating: a record claimed while an old worker still had connections open must not
        // wrap below zero.
        let _ = self
            .active
            .fetch_update(Relaxed, Relaxed, |a| Some(a.saturating_sub(1)));
        if failed {
            self.total_fails.fetch_add(1, Relaxed);
            self.accessed_ms.store(now_ms, Relaxed);
            self.checked_ms.store(now_ms, Relaxed);
            let before = self.fails.fetch_add(1, Relaxed);
            if limits.max_fails > 0 && before + 1 == limits.max_fails {
                self.unavail.fetch_add(1, Relaxed);
                return Some(FailOutcome::MadeUnavailable);
            }
            return Some(FailOutcome::Counted);
        }
        if self.accessed_ms.load(Relaxed) < self.checked_ms.load(Relaxed) {
            self.fails.store(0, Relaxed);
        }
        None
    }

    /// Forgets everything but the identity: a record given to a peer it did not belong to.
    pub fn reset_state(&self) {
        for a in [&self.fails, &self.active] {
            a.store(0, Relaxed);
        }
        for a in [
            &self.checked_ms,
            &self.accessed_ms,
            &self.requests,
            &self.total_fails,
            &self.unavail,
        ] {
            a.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_fails: 1,
        fail_timeout_ms: 10_000,
        max_conns: 0,
    };

    #[test]
    fn one_failure_disables_for_fail_timeout_then_one_probe() {
        let p = PeerShared::default();
        assert!(p.verdict(&L, 100_000).can_pick());
        p.on_pick(&L, 100_000);
        assert_eq!(
            p.on_done(true, &L, 100_000),
            Some(FailOutcome::MadeUnavailable)
        );
        assert_eq!(p.verdict(&L, 105_000), Verdict::Failed);
        assert_eq!(p.verdict(&L, 110_000), Verdict::Failed);
        assert_eq!(p.verdict(&L, 110_001), Verdict::Probe);
        p.on_pick(&L, 110_001);
        // The probe is in flight: nobody else may probe.
        assert_eq!(p.verdict(&L, 110_002), Verdict::Failed);
        // It succeeds: failures are cleared.
        assert_eq!(p.on_done(false, &L, 110_005), None);
        assert_eq!(p.verdict(&L, 110_006), Verdict::Usable);
        assert_eq!(p.unavail.load(Relaxed), 1);
        assert_eq!(p.requests.load(Relaxed), 2);
        assert_eq!(p.active.load(Relaxed), 0);
    }

    #[test]
    fn failures_count_up_to_max_fails() {
        let l = Limits { max_fails: 3, ..L };
        let p = PeerShared::default();
        assert_eq!(p.on_done(true, &l, 1), Some(FailOutcome::Counted));
        assert_eq!(p.on_done(true, &l, 2), Some(FailOutcome::Counted));
        assert!(p.verdict(&l, 3).can_pick());
        assert_eq!(p.on_done(true, &l, 3), Some(FailOutcome::MadeUnavailable));
        assert!(!p.verdict(&l, 4).can_pick());
        assert_eq!(p.on_done(true, &l, 5), Some(FailOutcome::Counted));
    }

    #[test]
    fn active_never_wraps() {
        let p = PeerShared::default();
        p.on_done(false, &L, 0);
        assert_eq!(p.active.load(Relaxed), 0);
    }

    #[test]
    fn max_conns_uses_shared_active_count() {
        let l = Limits { max_conns: 2, ..L };
        let p = PeerShared::default();
        p.on_pick(&l, 0);
        assert!(p.verdict(&l, 0).can_pick());
        p.on_pick(&l, 0);
        assert_eq!(p.verdict(&l, 0), Verdict::Full);
        p.on_done(false, &l, 1);
        assert!(p.verdict(&l, 1).can_pick());
    }
}
