//! Whether a peer may be chosen now: nginx's passive-failure rules (`max_fails` failures make a
//! peer unavailable for `fail_timeout`, after which one request probes it) and `max_conns`.
//! Times are milliseconds of nginx's monotonic clock.

/// A peer's configured limits, from its `server` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// 0 disables failure accounting.
    pub max_fails: u32,
    pub fail_timeout_ms: u64,
    /// 0 means unlimited.
    pub max_conns: u32,
}

/// The verdict for one peer at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Healthy as far as passive accounting knows.
    Usable,
    /// Failed `max_fails` times, but `fail_timeout` has passed since it was last checked: it may
    /// take one request to see whether it is back.
    Probe,
    /// Failed `max_fails` times within `fail_timeout`.
    Failed,
    /// At `max_conns` active connections.
    Full,
    /// Down according to active health checks.
    Unhealthy,
    /// Taken out by an operator (`lb_api`: drain or down).
    Withdrawn,
    /// Ejected by outlier detection (`lb_outlier`) for a while.
    Ejected,
}

impl Verdict {
    pub fn can_pick(self) -> bool {
        matches!(self, Verdict::Usable | Verdict::Probe)
    }
}

/// Judges a peer from its shared counters.
pub fn judge(
    limits: &Limits,
    healthy: bool,
    fails: u32,
    checked_ms: u64,
    active: u32,
    now_ms: u64,
) -> Verdict {
    if !healthy {
        return Verdict::Unhealthy;
    }
    if limits.max_fails > 0 && fails >= limits.max_fails {
        if now_ms.saturating_sub(checked_ms) <= limits.fail_timeout_ms {
            return Verdict::Failed;
        }
        if limits.max_conns > 0 && active >= limits.max_conns {
            return Verdict::Full;
        }
        return Verdict::Probe;
    }
    if limits.max_conns > 0 && active >= limits.max_conns {
        return Verdict::Full;
    }
    Verdict::Usable
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_fails: 2,
        fail_timeout_ms: 10_000,
        max_conns: 0,
    };

    #[test]
    fn failures_within_timeout() {
        assert_eq!(judge(&L, true, 0, 0, 0, 5), Verdict::Usable);
        assert_eq!(judge(&L, true, 1, 1000, 0, 1001), Verdict::Usable);
        assert_eq!(judge(&L, true, 2, 1000, 0, 1001), Verdict::Failed);
        assert_eq!(judge(&L, true, 2, 1000, 0, 11_000), Verdict::Failed);
        assert_eq!(judge(&L, true, 2, 1000, 0, 11_001), Verdict::Probe);
        assert!(Verdict::Probe.can_pick());
        assert!(!Verdict::Failed.can_pick());
    }

    #[test]
    fn max_fails_zero_never_fails() {
        let l = Limits { max_fails: 0, ..L };
        assert_eq!(judge(&l, true, 100, 1000, 0, 1001), Verdict::Usable);
    }

    #[test]
    fn max_conns() {
        let l = Limits { max_conns: 1, ..L };
        assert_eq!(judge(&l, true, 0, 0, 0, 0), Verdict::Usable);
        assert_eq!(judge(&l, true, 0, 0, 1, 0), Verdict::Full);
        assert_eq!(judge(&l, true, 2, 0, 1, 20_000), Verdict::Full);
        assert!(!Verdict::Full.can_pick());
    }

    #[test]
    fn unhealthy_wins() {
        assert_eq!(judge(&L, false, 0, 0, 0, 0), Verdict::Unhealthy);
        assert!(!Verdict::Unhealthy.can_pick());
    }
}
