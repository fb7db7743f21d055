//! One peer's record in shared memory. Every field is an atomic, so any worker reads and updates
//! it without a lock, and a worker killed mid-update leaves nothing locked.

use core::sync::atomic::{
    AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use crate::balance::availability::{judge, Limits, Verdict};
use crate::balance::outlier::OutlierConf;
use crate::balance::p2c::{ewma, faded};
use crate::health::reason::Reason;
use crate::health::state::{Health, Transition};
use crate::status::histogram;

/// Shared state of one peer. Records lie side by side (`shm::table`), 8-byte aligned, sized to
/// what they hold; so that two workers serving neighbouring peers do not contend for a cache
/// line, the first and last 64 bytes hold fields that are written rarely (identity,
/// configuration, operator's state, health-check tallies), and the fields written per request
/// lie between them.
#[repr(C)]
#[derive(Default)]
pub struct PeerShared {
    // Written rarely (at claims, reloads, by operators, per probe).
    /// Identity: two independent 64-bit hashes of "upstream\0address"; both zero = never used.
    pub(super) key_a: AtomicU64,
    pub(super) key_b: AtomicU64,
    /// A fingerprint of the peer's `server` line parameters when it was last committed: an
    /// operator's changes hold until the configuration changes the line.
    pub(super) line: AtomicU64,
    /// When a worker saw this peer's address leave its resolved name's answer (nginx's
    /// monotonic ms), or 0 while it is a member. A released record is given to another
    /// address only once no connection to it is counted and a grace period passed.
    pub(super) released_ms: AtomicU64,
    /// The last probe's result (`health::reason::Reason`, encoded: code in the high half,
    /// detail in the low half), one word so that a reader never pairs two probes' halves.
    pub(super) reason_word: AtomicU64,
    /// The configuration generation that last claimed this record.
    pub(super) generation: AtomicU32,
    /// The last generation in which this peer was configured, not `down`, and health-checked;
    /// a peer that was not probed in the previous generation starts in `default=` state.
    pub(super) probed_generation: AtomicU32,
    /// The operator's state (`api::Admin::code`: up, drain, down), set through `lb_api`;
    /// kept over reloads like the rest of the record.
    pub(super) admin: AtomicU32,
    /// The weight an operator set (`lb_api`), 0 for the configured one.
    pub(super) weight: AtomicU32,
    /// `lb_panic`: 1 while the upstream is in panic mode, kept in the record of its first
    /// primary peer, so that entering and leaving are logged once for all workers.
    pub(super) panic: AtomicU32,
    /// pid of the worker that took the last lease.
    pub(super) prober_pid: AtomicU32,

    // Written per request or response.
    /// Passive failures counted in the current `fail_timeout` window.
    pub(super) fails: AtomicU32,
    /// Connections to this peer in progress over all workers. Each worker also counts its own
    /// in its row of the table's per-worker counters (`table::Slots`), so that when a worker
    /// is killed with connections open, the one that takes its row over can subtract them.
    pub(super) active_total: AtomicU32,
    /// When the peer was last checked (a failure, or a pick after `fail_timeout`), ms.
    pub(super) checked_ms: AtomicU64,
    /// When the peer last failed, ms.
    pub(super) accessed_ms: AtomicU64,
    /// Requests sent to this peer (each attempt counts).
    pub(super) requests: AtomicU64,
    /// Passive failures in total.
    pub(super) total_fails: AtomicU64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub(super) responses: [AtomicU64; 5],
    /// Exponentially weighted moving average of the response time in microseconds, plus one
    /// (0: no response yet), so that a run of sub-millisecond answers still reads as a value.
    pub(super) response_ewma_us: AtomicU64,
    /// When the last response time was folded in (nginx's monotonic ms).
    pub(super) response_at_ms: AtomicU64,
    /// Active health: the packed rise/fall word (`health::state::Health`).
    pub(super) health: AtomicU64,
    /// The probe lease: the next probe is due at this time (nginx's monotonic ms); the worker
    /// that moves it forward (compare-and-swap) runs the probe. A worker that dies mid-probe
    /// holds nothing: the next one is simply due an interval later.
    pub(super) next_check_ms: AtomicU64,
    /// `lb_outlier`: responses with status >= 500, and failed attempts without a response, in
    /// a row (over all workers).
    pub(super) consecutive_5xx: AtomicU32,
    pub(super) consecutive_errors: AtomicU32,
    /// Responses per response-time bucket (`status::histogram`), and their times added up.
    pub(super) response_buckets: [AtomicU64; histogram::BUCKETS],
    pub(super) response_sum_ms: AtomicU64,

    // Written rarely (per probe, per ejection, per state change).
    /// Probes finished, and how many of them failed.
    pub(super) checks: AtomicU32,
    pub(super) check_fails: AtomicU32,
    /// Times health checks took the peer down.
    pub(super) unhealthy: AtomicU32,
    /// Times the peer was made unavailable by passive failures.
    pub(super) unavail: AtomicU32,
    /// Wall-clock time (ms since the epoch) of the last up/down change.
    pub(super) last_change_ms: AtomicU64,
    /// Time spent down by health checks, ms, not counting the current down period.
    pub(super) downtime_ms: AtomicU64,
    /// `lb_slow_start`: when the peer last became available again (nginx's monotonic ms), 0
    /// for never: its weight ramps up from then.
    pub(super) ramp_start_ms: AtomicU64,
    /// Ejected until this time (nginx's monotonic ms), 0 for never; 1 in `ejected` from the
    /// ejection until a worker notes its end (to log it once); times ejected in total.
    pub(super) ejected_until_ms: AtomicU64,
    pub(super) ejected: AtomicU32,
    pub(super) ejections: AtomicU32,
    /// What the next ejection's length is multiplied by (`lb_outlier`'s backoff): one more
    /// per ejection, back to 1 after a healthy `max_ejection`.
    pub(super) ejection_multiplier: AtomicU32,
    /// Whether a pick may take the peer on one load (`pickable`): the low bit (`CALM`) says
    /// that nothing that can keep the peer from being picked happened since a pick last found
    /// it plainly usable (no operator's state, not ejected, healthy, no passive failure
    /// counted). Every change that can keep it out (`disturb`) clears the bit and counts one
    /// more in the bits above, so a pick that read the word before such a change cannot set
    /// the bit again over it (`settle` sets it with a compare-and-swap of the word it read).
    /// A zeroed record is not calm: its first pick judges it in full.
    pub(super) attention: AtomicU32,
}

/// `PeerShared::attention`'s low bit.
const CALM: u32 = 1;

/// Why outlier detection ejects a peer: so many responses >= 500, or errors, in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outlier {
    FiveXx(u32),
    Errors(u32),
}

/// A copy of a record's counters, for the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub requests: u64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub responses: [u64; 5],
    /// Passive failures in total.
    pub fails: u64,
    /// Times passive failures made the peer unavailable.
    pub unavail: u64,
    /// Probes finished, and how many failed.
    pub checks: u64,
    pub check_fails: u64,
    /// Times health checks took the peer down.
    pub unhealthy: u64,
    /// Wall-clock ms of the last up/down change, 0 for none.
    pub last_change_ms: u64,
    /// Time spent down by health checks before the current down period, ms.
    pub downtime_ms: u64,
}

/// What the end of an attempt did to the peer, so the caller can log a state change once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    Counted,
    /// This failure reached `max_fails`: the peer is now unavailable for `fail_timeout`.
    MadeUnavailable,
    /// This success ended a passive failure period: the peer's `lb_slow_start` ramp started.
    Recovered,
}

impl PeerShared {
    /// Counts a response for outlier detection: a status >= 500 adds to the run of them, any
    /// other ends both runs. Returns the reason to eject when a run reached its threshold.
    #[inline]
    pub fn outlier_response(&self, status: u16, conf: &OutlierConf) -> Option<Outlier> {
        if status >= 500 {
            self.consecutive_errors.store(0, Relaxed);
            let n = self.consecutive_5xx.fetch_add(1, Relaxed) + 1;
            return (conf.consecutive_5xx > 0 && n >= conf.consecutive_5xx)
                .then_some(Outlier::FiveXx(n));
        }
        // Loads first: most responses find both runs at 0 and write nothing.
        if self.consecutive_5xx.load(Relaxed) != 0 {
            self.consecutive_5xx.store(0, Relaxed);
        }
        if self.consecutive_errors.load(Relaxed) != 0 {
            self.consecutive_errors.store(0, Relaxed);
        }
        None
    }

    /// Counts an attempt that failed without a response (connect error, timeout).
    pub fn outlier_error(&self, conf: &OutlierConf) -> Option<Outlier> {
        let n = self.consecutive_errors.fetch_add(1, Relaxed) + 1;
        (conf.consecutive_errors > 0 && n >= conf.consecutive_errors).then_some(Outlier::Errors(n))
    }

    /// Ejects the peer (one worker wins when several see the run end): returns the ejection's
    /// number (1 for the first) and length, ms. Both runs start over.
    pub fn eject(&self, conf: &OutlierConf, now_ms: u64) -> Option<(u64, u64)> {
        self.consecutive_5xx.store(0, Relaxed);
        self.consecutive_errors.store(0, Relaxed);
        let until = self.ejected_until_ms.load(Relaxed);
        if until > now_ms {
            return None;
        }
        // The backoff starts over once the peer stayed out of trouble for a max_ejection.
        let multiplier = if until != 0 && now_ms > until.saturating_add(conf.max_ejection_ms) {
            1
        } else {
            self.ejection_multiplier.load(Relaxed).saturating_add(1)
        };
        let ms = conf.ejection_ms(u64::from(multiplier));
        // The ejection itself: one worker wins; a picker sees `until` before the flag, so it
        // never takes a return for an ejection that is only starting.
        if self
            .ejected_until_ms
            .compare_exchange(until, now_ms + ms, Relaxed, Relaxed)
            .is_err()
        {
            return None;
        }
        self.disturb();
        self.ejection_multiplier.store(multiplier, Relaxed);
        self.ejected.store(1, Relaxed);
        let n = self.ejections.fetch_add(1, Relaxed).wrapping_add(1);
        Some((u64::from(n), ms))
    }

    /// Forgets the runs (an ejection was refused by `max_percent`: count afresh).
    pub fn forget_runs(&self) {
        self.consecutive_5xx.store(0, Relaxed);
        self.consecutive_errors.store(0, Relaxed);
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Relaxed) > now_ms
    }

    /// Whether an ejection ended by `now_ms` and nobody said so yet (true once).
    #[inline]
    pub fn take_return(&self, now_ms: u64) -> bool {
        self.ejected.load(Relaxed) != 0
            && self.ejected_until_ms.load(Relaxed) <= now_ms
            && self
                .ejected
                .compare_exchange(1, 0, Relaxed, Relaxed)
                .is_ok()
            && {
                self.start_ramp(now_ms);
                true
            }
    }

    /// Times outlier detection ejected the peer.
    pub fn ejections(&self) -> u64 {
        u64::from(self.ejections.load(Relaxed))
    }

    /// Notes whether the upstream (whose first primary peer this is) is in panic mode;
    /// whether that changed.
    pub fn set_panic(&self, on: bool) -> bool {
        self.panic.swap(u32::from(on), Relaxed) != u32::from(on)
    }

    pub fn panic(&self) -> bool {
        self.panic.load(Relaxed) != 0
    }

    /// The packed rise/fall state.
    #[inline]
    pub fn health(&self) -> Health {
        Health(self.health.load(Relaxed))
    }

    /// The record's counters, each read once (not one atomic snapshot: each is exact, the set
    /// may straddle an update).
    pub fn counters(&self) -> Counters {
        Counters {
            requests: self.requests.load(Relaxed),
            responses: core::array::from_fn(|i| self.responses[i].load(Relaxed)),
            fails: self.total_fails.load(Relaxed),
            unavail: u64::from(self.unavail.load(Relaxed)),
            checks: u64::from(self.checks.load(Relaxed)),
            check_fails: u64::from(self.check_fails.load(Relaxed)),
            unhealthy: u64::from(self.unhealthy.load(Relaxed)),
            last_change_ms: self.last_change_ms.load(Relaxed),
            downtime_ms: self.downtime_ms.load(Relaxed),
        }
    }

    /// When the next probe is due (nginx's monotonic ms), and the pid of the worker that took
    /// the last lease.
    pub fn lease(&self) -> (u64, u32) {
        (
            self.next_check_ms.load(Relaxed),
            self.prober_pid.load(Relaxed),
        )
    }

    /// Hands the record to the peer of a configuration of generation `generation` (once nginx
    /// committed it). Its health: a `fresh` record starts as `default=` says; a peer whose
    /// upstream has no checks is up (nothing else would ever bring it back); a peer that was not
    /// health-checked in the previous generation (it was `down`, not configured, or unchecked)
    /// starts as `default=` says too, since its old state says nothing about it now; otherwise
    /// it keeps its health. `probed`: the peer is checked in this generation.
    pub fn commit(
        &self,
        generation: u32,
        fresh: bool,
        checked: bool,
        default_up: bool,
        probed: bool,
    ) {
        let probed_before = self.probed_generation.load(Relaxed) == generation.wrapping_sub(1);
        let up = if fresh || (checked && !probed_before) {
            Some(default_up)
        } else if !checked {
            Some(true)
        } else {
            None
        };
        if let Some(up) = up {
            self.health.store(Health::initial(up).0, Relaxed);
            self.disturb();
        }
        self.probed_generation
            .store(if probed { generation } else { 0 }, Relaxed);
        // Configured (or carried over) in this generation: a member, whatever a worker of the
        // previous one said.
        self.released_ms.store(0, Relaxed);
    }

    /// The key of the peer this record belongs to now (records of resolved addresses that
    /// left are given to other addresses in time).
    pub fn key(&self) -> (u64, u64) {
        (self.key_a.load(Relaxed), self.key_b.load(Relaxed))
    }

    /// A worker adds a resolved address to its peers at run time (`shm::table::claim` gave it
    /// this record in generation `generation`). A `fresh` record starts as `default=` says (up
    /// when the upstream has no checks); a record other workers (or an earlier answer) already
    /// hold keeps its health and counters. Either way the record is a member again.
    /// Returns whether this call is the one that (re)admitted the address: the record was
    /// fresh or released.
    pub fn join(&self, generation: u32, fresh: bool, checked: bool, default_up: bool) -> bool {
        if fresh {
            self.health
                .store(Health::initial(default_up || !checked).0, Relaxed);
            self.disturb();
        }
        if checked {
            self.probed_generation.fetch_max(generation, Relaxed);
        }
        self.released_ms.swap(0, Relaxed) != 0 || fresh
    }

    /// A worker saw the peer's address leave its name's answer at `now_ms`. True for the
    /// first worker to say so.
    pub fn release_membership(&self, now_ms: u64) -> bool {
        self.released_ms
            .compare_exchange(0, now_ms.max(1), Relaxed, Relaxed)
            .is_ok()
    }

    /// Whether the record may go to another address at `now_ms`: released at least
    /// `grace_ms` ago and no connection to it counted.
    pub fn reusable_at(&self, now_ms: u64, grace_ms: u64) -> bool {
        let released = self.released_ms.load(Relaxed);
        released != 0 && now_ms >= released.saturating_add(grace_ms) && self.active() == 0
    }

    /// The weight an operator set, if any.
    pub fn weight_override(&self) -> Option<u32> {
        match self.weight.load(Relaxed) {
            0 => None,
            w => Some(w),
        }
    }

    /// Sets (or with `None` clears) the operator's weight; returns the previous one.
    pub fn set_weight(&self, w: Option<u32>) -> Option<u32> {
        match self.weight.swap(w.unwrap_or(0), Relaxed) {
            0 => None,
            w => Some(w),
        }
    }

    /// Notes the `server` line's fingerprint at a (re)load: when it differs from the last
    /// one, the configuration changed the peer and the operator's state and weight are
    /// dropped (the configuration wins). Returns whether they were.
    pub fn configured_as(&self, line: u64) -> bool {
        let before = self.line.swap(line, Relaxed);
        if before != 0 && before != line {
            self.admin.store(0, Relaxed);
            self.weight.store(0, Relaxed);
            return true;
        }
        false
    }

    /// The `server` line fingerprint the record was last committed with.
    pub fn line(&self) -> u64 {
        self.line.load(Relaxed)
    }

    /// Health checks stopped for a while (the peer was taken down): the health state starts
    /// over as `default=` says, and the next probe is due at once.
    pub fn recheck(&self, default_up: bool) {
        self.health.store(Health::initial(default_up).0, Relaxed);
        self.disturb();
        self.next_check_ms.store(0, Relaxed);
    }

    /// Drops what an operator set (state, weight) and the line it was set for.
    pub fn forget_operator(&self) {
        self.admin.store(0, Relaxed);
        self.weight.store(0, Relaxed);
        self.line.store(0, Relaxed);
    }

    /// The operator's state (`api::Admin::code`).
    pub fn admin(&self) -> u32 {
        self.admin.load(Relaxed)
    }

    /// Sets the operator's state; returns the previous one.
    pub fn set_admin(&self, code: u32) -> u32 {
        let before = self.admin.swap(code, Relaxed);
        self.disturb();
        before
    }

    /// Something that can keep the peer from being picked changed (see `attention`); called
    /// after the change itself.
    #[inline]
    fn disturb(&self) {
        let _ = self
            .attention
            .fetch_update(Release, Relaxed, |v| Some(v.wrapping_add(2) & !CALM));
    }

    /// Whether the peer may take a request now, as `verdict(limits, now_ms).can_pick()` says:
    /// one load while it is calm and has no `max_conns` (nearly every pick), the full verdict
    /// otherwise.
    #[inline(always)]
    pub fn pickable(&self, limits: &Limits, now_ms: u64) -> bool {
        if limits.max_conns == 0 && self.attention.load(Relaxed) & CALM != 0 {
            return true;
        }
        self.pickable_slowly(limits, now_ms)
    }

    #[inline(never)]
    fn pickable_slowly(&self, limits: &Limits, now_ms: u64) -> bool {
        let word = self.attention.load(Acquire);
        let verdict = self.verdict(limits, now_ms);
        if word & CALM == 0 && self.plainly_usable(now_ms) {
            // Lost to a change made since `word` was read: the next pick judges in full again.
            let _ = self
                .attention
                .compare_exchange(word, word | CALM, Relaxed, Relaxed);
        }
        verdict.can_pick()
    }

    /// No operator's state, not ejected, healthy, no passive failure counted: usable whatever
    /// the limits (but `max_conns`).
    fn plainly_usable(&self, now_ms: u64) -> bool {
        self.admin.load(Relaxed) == 0
            && self.ejected_until_ms.load(Relaxed) <= now_ms
            && Health(self.health.load(Relaxed)).up()
            && self.fails.load(Relaxed) == 0
    }

    /// Passive-failure and `max_conns` verdict at `now_ms`; a peer an operator took out
    /// (drain, down) is `Withdrawn` whatever else holds.
    #[inline]
    pub fn verdict(&self, limits: &Limits, now_ms: u64) -> Verdict {
        self.verdict_with(limits, now_ms, true)
    }

    /// As `verdict`; `ejection: false` leaves outlier ejection out (an upstream's only peer is
    /// never locked out, as nginx never makes it unavailable).
    #[inline]
    pub fn verdict_with(&self, limits: &Limits, now_ms: u64, ejection: bool) -> Verdict {
        if self.admin.load(Relaxed) != 0 {
            return Verdict::Withdrawn;
        }
        if ejection && self.ejected_until_ms.load(Relaxed) > now_ms {
            return Verdict::Ejected;
        }
        // The active count only matters with max_conns: don't add it up otherwise.
        let active = if limits.max_conns > 0 {
            self.active()
        } else {
            0
        };
        judge(
            limits,
            Health(self.health.load(Relaxed)).up(),
            self.fails.load(Relaxed),
            self.checked_ms.load(Relaxed),
            active,
            now_ms,
        )
    }

    /// Connections in progress over all workers.
    #[inline]
    pub fn active(&self) -> u32 {
        self.active_total.load(Relaxed)
    }

    /// Forgets the connections a worker that no longer runs counted in `mine` (its counter
    /// for this peer).
    pub fn forget_active(&self, mine: &AtomicU32) {
        let gone = mine.swap(0, Relaxed);
        if gone > 0 {
            let _ = self
                .active_total
                .fetch_update(Relaxed, Relaxed, |t| Some(t.saturating_sub(gone)));
        }
    }

    /// Records that a request was sent to this peer. As in nginx, a pick made more than
    /// `fail_timeout` after the last check becomes the new check: a success after it clears the
    /// failure count, and for a failed peer only the one request that wins this exchange probes it.
    #[inline]
    /// `mine` is this worker's counter for the peer.
    pub fn on_pick(&self, limits: &Limits, now_ms: u64, mine: &AtomicU32) {
        let checked = self.checked_ms.load(Relaxed);
        if now_ms.saturating_sub(checked) > limits.fail_timeout_ms {
            let _ = self
                .checked_ms
                .compare_exchange(checked, now_ms, Relaxed, Relaxed);
        }
        mine.fetch_add(1, Relaxed);
        self.active_total.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
    }

    /// Records the end of an attempt.
    #[inline]
    pub fn on_done(
        &self,
        failed: bool,
        limits: &Limits,
        now_ms: u64,
        mine: &AtomicU32,
    ) -> Option<FailOutcome> {
        self.release(mine);
        if failed {
            self.total_fails.fetch_add(1, Relaxed);
            self.accessed_ms.store(now_ms, Relaxed);
            self.checked_ms.store(now_ms, Relaxed);
            let before = self.fails.fetch_add(1, Relaxed);
            self.disturb();
            if limits.max_fails > 0 && before + 1 == limits.max_fails {
                self.unavail.fetch_add(1, Relaxed);
                return Some(FailOutcome::MadeUnavailable);
            }
            return Some(FailOutcome::Counted);
        }
        // Read before written: nearly every answer finds no failure to forget, and a write
        // would take the record's cache line from the other workers each time.
        if self.accessed_ms.load(Relaxed) < self.checked_ms.load(Relaxed)
            && self.fails.load(Relaxed) != 0
        {
            let before = self.fails.swap(0, Relaxed);
            if limits.max_fails > 0 && before >= limits.max_fails {
                // Back from a passive failure period.
                self.start_ramp(now_ms);
                return Some(FailOutcome::Recovered);
            }
        }
        None
    }

    /// The peer became available again at `now_ms` (`lb_slow_start` ramps its weight from
    /// there).
    pub fn start_ramp(&self, now_ms: u64) {
        self.ramp_start_ms.store(now_ms.max(1), Relaxed);
    }

    /// When the peer's ramp started, 0 for never.
    #[inline]
    pub fn ramp_start(&self) -> u64 {
        self.ramp_start_ms.load(Relaxed)
    }

    /// Records the end of an attempt to an upstream's only peer (nginx's `single`): a failure
    /// is counted in the totals, but the failure window is cleared rather than filled, so the
    /// peer is never made unavailable by passive failures.
    #[inline]
    pub fn on_done_single(&self, failed: bool, mine: &AtomicU32) -> Option<FailOutcome> {
        self.release(mine);
        if self.fails.load(Relaxed) != 0 {
            self.fails.store(0, Relaxed);
        }
        if failed {
            self.total_fails.fetch_add(1, Relaxed);
            return Some(FailOutcome::Counted);
        }
        None
    }

    /// One connection counted in `mine` ended.
    #[inline]
    fn release(&self, mine: &AtomicU32) {
        // Saturating: a counter reset while connections were open must not wrap below zero,
        // and the total only drops for a connection the counter still counted.
        if mine
            .fetch_update(Relaxed, Relaxed, |a| a.checked_sub(1))
            .is_ok()
        {
            self.active_total.fetch_sub(1, Relaxed);
        }
    }

    /// Counts a response by status class and folds its time into the moving average, whose
    /// weights decay with time constant `decay_ms` (see `balance::p2c::ewma`).
    #[inline]
    pub fn on_response(&self, status: u16, response_us: Option<u64>, now_ms: u64, decay_ms: u64) {
        if (100..600).contains(&status) {
            self.responses[usize::from(status / 100 - 1)].fetch_add(1, Relaxed);
        }
        if let Some(us) = response_us {
            let ms = us / 1000;
            self.response_buckets[histogram::bucket_of(ms)].fetch_add(1, Relaxed);
            self.response_sum_ms.fetch_add(ms, Relaxed);
            let dt = now_ms.saturating_sub(self.response_at_ms.swap(now_ms, Relaxed));
            let _ = self.response_ewma_us.fetch_update(Relaxed, Relaxed, |old| {
                Some(ewma(old.checked_sub(1), us, dt, decay_ms) + 1)
            });
        }
    }

    /// The response-time histogram, each bucket read once.
    pub fn histogram(&self) -> histogram::Histogram {
        histogram::Histogram {
            counts: core::array::from_fn(|i| self.response_buckets[i].load(Relaxed)),
            sum_ms: self.response_sum_ms.load(Relaxed),
        }
    }

    /// The moving average of the response time, µs; `None` before the first response.
    pub fn response_time_us(&self) -> Option<u64> {
        self.response_ewma_us.load(Relaxed).checked_sub(1)
    }

    /// The average as p2c should see it at `now_ms`: faded towards zero for the time without a
    /// new sample, so that a peer that was slow once is tried again after a while instead of
    /// being avoided forever.
    pub fn response_time_us_at(&self, now_ms: u64, decay_ms: u64) -> Option<u64> {
        let t = self.response_time_us()?;
        let idle = now_ms.saturating_sub(self.response_at_ms.load(Relaxed));
        Some(faded(t, idle, decay_ms))
    }

    /// Whether health checks currently consider the peer up.
    pub fn healthy(&self) -> bool {
        Health(self.health.load(Relaxed)).up()
    }

    /// Tries to take the probe lease at `now_ms`: succeeds for exactly one caller once the
    /// probe is due, and moves the due time to `next_ms`.
    pub fn take_lease(&self, now_ms: u64, next_ms: u64, pid: u32) -> bool {
        let due = self.next_check_ms.load(Relaxed);
        if now_ms < due {
            return false;
        }
        if self
            .next_check_ms
            .compare_exchange(due, next_ms, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        self.prober_pid.store(pid, Relaxed);
        true
    }

    /// Moves the next probe's due time from `from` to `to` (a reload shortened the interval:
    /// `health::schedule::capped_due`); false when another worker changed it first.
    pub fn move_lease(&self, from: u64, to: u64) -> bool {
        self.next_check_ms
            .compare_exchange(from, to, Relaxed, Relaxed)
            .is_ok()
    }

    /// Records a probe result and applies rise/fall. Returns the transition, if any, so the
    /// caller logs it once. `wall_ms` is the wall clock, for the status page.
    pub fn on_check(
        &self,
        reason: Reason,
        rise: u32,
        fall: u32,
        wall_ms: u64,
    ) -> Option<Transition> {
        let passed = reason == Reason::Passed;
        self.checks.fetch_add(1, Relaxed);
        if passed {
            // Active checks are the authority on a peer's health: a passed check ends a passive
            // failure period (otherwise a peer back from an outage would wait out fail_timeout).
            self.fails.store(0, Relaxed);
        } else {
            self.check_fails.fetch_add(1, Relaxed);
        }
        let (code, detail) = reason.encode();
        self.reason_word
            .store(u64::from(code) << 32 | u64::from(detail), Relaxed);
        let mut transition = None;
        let _ = self.health.fetch_update(Relaxed, Relaxed, |old| {
            let (new, t) = Health(old).apply(passed, rise, fall);
            transition = t;
            Some(new.0)
        });
        if !passed {
            // Every failed probe, not only the one that takes the peer down: a prober killed
            // between the two writes leaves the word calm at worst until its next probe.
            self.disturb();
        }
        match transition {
            Some(Transition::WentDown) => {
                self.unhealthy.fetch_add(1, Relaxed);
                self.last_change_ms.store(wall_ms, Relaxed);
            }
            Some(Transition::WentUp) => {
                let since = self.last_change_ms.swap(wall_ms, Relaxed);
                if since > 0 && wall_ms > since {
                    self.downtime_ms.fetch_add(wall_ms - since, Relaxed);
                }
            }
            None => {}
        }
        transition
    }

    /// The last probe's result.
    pub fn reason(&self) -> Reason {
        let word = self.reason_word.load(Relaxed);
        Reason::decode((word >> 32) as u32, word as u32)
    }

    /// Forgets everything but the identity: a record given to a peer it did not belong to.
    /// Health starts as `default_up` says.
    pub fn reset_state(&self, default_up: bool) {
        for a in [
            &self.active_total,
            &self.fails,
            &self.prober_pid,
            &self.probed_generation,
            &self.admin,
            &self.weight,
            &self.panic,
            &self.consecutive_5xx,
            &self.consecutive_errors,
            &self.ejected,
            &self.unavail,
            &self.ejections,
            &self.ejection_multiplier,
            &self.checks,
            &self.check_fails,
            &self.unhealthy,
        ] {
            a.store(0, Relaxed);
        }
        for a in [
            &self.reason_word,
            &self.checked_ms,
            &self.accessed_ms,
            &self.requests,
            &self.total_fails,
            &self.response_ewma_us,
            &self.response_at_ms,
            &self.response_sum_ms,
            &self.ejected_until_ms,
            &self.ramp_start_ms,
            &self.last_change_ms,
            &self.downtime_ms,
            &self.next_check_ms,
            &self.released_ms,
            &self.line,
        ] {
            a.store(0, Relaxed);
        }
        for a in self.responses.iter().chain(&self.response_buckets) {
            a.store(0, Relaxed);
        }
        self.health.store(Health::initial(default_up).0, Relaxed);
        self.disturb();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_written_per_request_keep_away_from_the_neighbours() {
        use core::mem::{offset_of, size_of};
        let size = size_of::<PeerShared>();
        // Sized to what it holds (no padding to whole cache lines).
        assert!(size <= 352, "{size}");
        let hot = [
            offset_of!(PeerShared, fails),
            offset_of!(PeerShared, active_total),
            offset_of!(PeerShared, checked_ms),
            offset_of!(PeerShared, accessed_ms),
            offset_of!(PeerShared, requests),
            offset_of!(PeerShared, total_fails),
            offset_of!(PeerShared, responses),
            offset_of!(PeerShared, response_ewma_us),
            offset_of!(PeerShared, response_at_ms),
            offset_of!(PeerShared, consecutive_5xx),
            offset_of!(PeerShared, consecutive_errors),
            offset_of!(PeerShared, response_buckets),
            offset_of!(PeerShared, response_sum_ms),
        ];
        for at in hot {
            // Not in the first 64 bytes, which may share a line with the previous record's end,
            // nor in the last 64, which may share one with the next record's start.
            assert!(at >= 64 && at + 8 <= size - 64, "{at} of {size}");
        }
    }

    const L: Limits = Limits {
        max_fails: 1,
        fail_timeout_ms: 10_000,
        max_conns: 0,
    };

    fn fresh() -> PeerShared {
        let p = PeerShared::default();
        p.reset_state(true);
        p
    }

    #[test]
    fn health_checks_take_a_peer_out_and_back() {
        let p = fresh();
        assert!(p.verdict(&L, 0).can_pick());
        assert_eq!(p.on_check(Reason::Status(500), 2, 2, 1000), None);
        assert_eq!(
            p.on_check(Reason::Status(500), 2, 2, 2000),
            Some(Transition::WentDown)
        );
        assert_eq!(p.verdict(&L, 0), Verdict::Unhealthy);
        assert_eq!(p.reason(), Reason::Status(500));
        assert_eq!(p.on_check(Reason::Passed, 2, 2, 3000), None);
        assert_eq!(
            p.on_check(Reason::Passed, 2, 2, 5000),
            Some(Transition::WentUp)
        );
        assert!(p.verdict(&L, 0).can_pick());
        assert_eq!(p.downtime_ms.load(Relaxed), 3000);
        assert_eq!(
            (p.checks.load(Relaxed), p.check_fails.load(Relaxed)),
            (4, 2)
        );
        assert_eq!(p.unhealthy.load(Relaxed), 1);
    }

    #[test]
    fn one_lease_per_interval() {
        let p = fresh();
        assert!(p.take_lease(1000, 2000, 7));
        assert!(!p.take_lease(1000, 2000, 8));
        assert!(!p.take_lease(1999, 2999, 8));
        assert!(p.take_lease(2000, 3000, 8));
        assert_eq!(p.prober_pid.load(Relaxed), 8);
        // A reload shortened the interval: the due time moves earlier once, from what it was.
        assert!(p.move_lease(3000, 2100));
        assert!(!p.move_lease(3000, 2050));
        assert_eq!(p.lease().0, 2100);
        assert!(!p.take_lease(2099, 3099, 9));
        assert!(p.take_lease(2100, 3100, 9));
    }

    #[test]
    fn responses_and_ewma() {
        let p = fresh();
        p.on_response(200, Some(800), 1000, 1000);
        p.on_response(503, Some(1600), 2000, 1000);
        p.on_response(404, None, 2000, 1000);
        assert_eq!(p.responses[1].load(Relaxed), 1);
        assert_eq!(p.responses[3].load(Relaxed), 1);
        assert_eq!(p.responses[4].load(Relaxed), 1);
        // One time constant later: half of the way from 800 to 1600.
        let t = p.response_time_us().unwrap();
        assert_eq!(t, 1200);
        let q = fresh();
        assert_eq!(q.response_time_us(), None);
        q.on_response(200, Some(0), 5, 1000);
        q.on_response(200, Some(0), 6, 1000);
        assert_eq!(q.response_time_us(), Some(0));
        // Fading while no sample arrives.
        assert_eq!(p.response_time_us_at(2000, 1000), Some(t));
        assert_eq!(p.response_time_us_at(3000, 1000), Some(t / 2));
    }

    #[test]
    fn one_failure_disables_for_fail_timeout_then_one_probe() {
        let mine = AtomicU32::new(0);
        let p = fresh();
        assert!(p.verdict(&L, 100_000).can_pick());
        p.on_pick(&L, 100_000, &mine);
        assert_eq!(
            p.on_done(true, &L, 100_000, &mine),
            Some(FailOutcome::MadeUnavailable)
        );
        assert_eq!(p.verdict(&L, 105_000), Verdict::Failed);
        assert_eq!(p.verdict(&L, 110_000), Verdict::Failed);
        assert_eq!(p.verdict(&L, 110_001), Verdict::Probe);
        p.on_pick(&L, 110_001, &mine);
        // The probe is in flight: nobody else may probe.
        assert_eq!(p.verdict(&L, 110_002), Verdict::Failed);
        // It succeeds: failures are cleared, and the peer's ramp starts (said once).
        assert_eq!(
            p.on_done(false, &L, 110_005, &mine),
            Some(FailOutcome::Recovered)
        );
        assert_eq!(p.ramp_start(), 110_005);
        p.on_pick(&L, 110_006, &mine);
        assert_eq!(p.on_done(false, &L, 110_007, &mine), None);
        assert_eq!(p.verdict(&L, 110_006), Verdict::Usable);
        assert_eq!(p.unavail.load(Relaxed), 1);
        assert_eq!(p.requests.load(Relaxed), 3);
        assert_eq!(p.active(), 0);
    }

    #[test]
    fn failures_count_up_to_max_fails() {
        let mine = AtomicU32::new(0);
        let l = Limits { max_fails: 3, ..L };
        let p = fresh();
        assert_eq!(p.on_done(true, &l, 1, &mine), Some(FailOutcome::Counted));
        assert_eq!(p.on_done(true, &l, 2, &mine), Some(FailOutcome::Counted));
        assert!(p.verdict(&l, 3).can_pick());
        assert_eq!(
            p.on_done(true, &l, 3, &mine),
            Some(FailOutcome::MadeUnavailable)
        );
        assert!(!p.verdict(&l, 4).can_pick());
        assert_eq!(p.on_done(true, &l, 5, &mine), Some(FailOutcome::Counted));
    }

    #[test]
    fn active_never_wraps() {
        let mine = AtomicU32::new(0);
        let p = PeerShared::default();
        p.on_done(false, &L, 0, &mine);
        assert_eq!(p.active(), 0);
    }

    #[test]
    fn active_over_workers_and_reset_after_a_crash() {
        let p = fresh();
        let (w0, w1) = (AtomicU32::new(0), AtomicU32::new(0));
        p.on_pick(&L, 0, &w0);
        p.on_pick(&L, 0, &w0);
        p.on_pick(&L, 0, &w1);
        assert_eq!(p.active(), 3);
        // Worker 0 is killed with two connections open; its successor forgets them.
        p.forget_active(&w0);
        assert_eq!(p.active(), 1);
        p.on_done(false, &L, 1, &w1);
        assert_eq!(p.active(), 0);
        // A late completion counted by a reset counter does not wrap.
        p.on_done(false, &L, 1, &w0);
        assert_eq!(p.active(), 0);
    }

    #[test]
    fn a_passed_check_ends_passive_failure() {
        let mine = AtomicU32::new(0);
        let p = fresh();
        p.on_done(true, &L, 1000, &mine);
        assert_eq!(p.verdict(&L, 1001), Verdict::Failed);
        p.on_check(Reason::Passed, 2, 2, 5);
        assert_eq!(p.verdict(&L, 1002), Verdict::Usable);
    }

    #[test]
    fn max_conns_uses_shared_active_count() {
        let mine = AtomicU32::new(0);
        let l = Limits { max_conns: 2, ..L };
        let p = fresh();
        p.on_pick(&l, 0, &mine);
        assert!(p.verdict(&l, 0).can_pick());
        p.on_pick(&l, 0, &mine);
        assert_eq!(p.verdict(&l, 0), Verdict::Full);
        p.on_done(false, &l, 1, &mine);
        assert!(p.verdict(&l, 1).can_pick());
    }

    #[test]
    fn a_reader_never_pairs_two_probes_halves_of_a_reason() {
        // One thread records alternating results, another reads them: every read must be one
        // of the results written, never the code of one with the detail of the other.
        use std::sync::atomic::AtomicBool;
        let p = fresh();
        let stop = AtomicBool::new(false);
        let (a, b) = (Reason::ConnectFailed(111), Reason::Status(503));
        std::thread::scope(|s| {
            s.spawn(|| {
                for k in 0..200_000u32 {
                    p.on_check(if k % 2 == 0 { a } else { b }, 2, 2, 0);
                }
                stop.store(true, Relaxed);
            });
            let mut reads = 0u64;
            while !stop.load(Relaxed) || reads == 0 {
                let r = p.reason();
                assert!(r == a || r == b || r == Reason::None, "torn read: {r:?}");
                reads += 1;
            }
        });
    }

    #[test]
    fn health_when_a_configuration_is_committed() {
        let p = fresh();
        // Generation 1: a new record, checked, default=down.
        p.commit(1, true, true, false, true);
        assert!(!p.healthy());
        p.on_check(Reason::Passed, 1, 1, 0);
        assert!(p.healthy());
        // Generation 2: probed in 1, so it keeps its health.
        p.commit(2, false, true, false, true);
        assert!(p.healthy());
        // Generation 3: configured `down` (not probed).
        p.commit(3, false, true, false, false);
        // Generation 4: back, default=down: its old "up" says nothing now.
        p.commit(4, false, true, false, true);
        assert!(!p.healthy());
        // Without checks a peer is up.
        p.commit(5, false, false, false, false);
        assert!(p.healthy());
        // Checks back after a generation without: default= again.
        p.commit(6, false, true, false, true);
        assert!(!p.healthy());
    }

    #[test]
    fn an_operator_withdraws_a_peer_until_set_up_again() {
        let p = fresh();
        assert_eq!(p.verdict(&L, 0), Verdict::Usable);
        assert_eq!(p.set_admin(1), 0);
        assert_eq!(p.verdict(&L, 0), Verdict::Withdrawn);
        assert!(!p.verdict(&L, 0).can_pick());
        // Kept by a commit (a reload), cleared by a reset (a record given to another peer).
        p.commit(2, false, true, true, true);
        assert_eq!(p.admin(), 1);
        p.set_admin(0);
        assert_eq!(p.verdict(&L, 0), Verdict::Usable);
        p.set_admin(2);
        p.reset_state(true);
        assert_eq!(p.admin(), 0);
    }

    #[test]
    fn operator_changes_hold_until_the_configuration_changes_the_line() {
        let p = fresh();
        assert!(!p.configured_as(7));
        p.set_admin(1);
        assert_eq!(p.set_weight(Some(3)), None);
        assert_eq!(p.weight_override(), Some(3));
        // A reload with the same line keeps them.
        assert!(!p.configured_as(7));
        assert_eq!((p.admin(), p.weight_override()), (1, Some(3)));
        // A reload that changed the line drops them.
        assert!(p.configured_as(8));
        assert_eq!((p.admin(), p.weight_override()), (0, None));
        p.set_weight(Some(5));
        p.reset_state(true);
        assert_eq!(p.weight_override(), None);
    }

    /// 3 responses >= 500 or 2 errors in a row eject for 1 s (backoff up to 5 s).
    const OUTLIER: crate::balance::outlier::OutlierConf = crate::balance::outlier::OutlierConf {
        consecutive_5xx: 3,
        consecutive_errors: 2,
        base_ejection_ms: 1000,
        max_ejection_ms: 5000,
        max_percent: 50,
    };

    /// `pickable` (one load while the record is calm) says what the full verdict says, after
    /// any sequence of the changes workers, probers, operators and reloads make, whatever
    /// the limits.
    #[test]
    fn pickable_agrees_with_the_verdict_after_every_change() {
        let c = OUTLIER;
        let mine = AtomicU32::new(0);
        let p = PeerShared::default();
        // A zeroed record is down (health 0) and not calm.
        assert!(!p.pickable(&L, 1));
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut now = 1u64;
        let (mut fast, mut calm_picks) = (0, 0);
        for step in 0..200_000 {
            let limits = Limits {
                max_fails: next(4) as u32,
                fail_timeout_ms: 10_000,
                max_conns: if next(8) == 0 { 2 } else { 0 },
            };
            match next(12) {
                0 => {
                    p.set_admin(if next(3) == 0 { next(3) as u32 } else { 0 });
                }
                1 => {
                    let _ = p.eject(&c, now);
                }
                2 => {
                    let _ = p.on_done(true, &limits, now, &mine);
                }
                3 | 4 => {
                    let _ = p.on_done(false, &limits, now, &mine);
                }
                5 | 6 => {
                    let r = if next(3) == 0 {
                        Reason::Timeout
                    } else {
                        Reason::Passed
                    };
                    let _ = p.on_check(r, 1 + next(2) as u32, 1 + next(2) as u32, now);
                }
                7 => p.commit(
                    step as u32,
                    next(4) == 0,
                    next(2) == 0,
                    next(2) == 0,
                    next(2) == 0,
                ),
                8 => {
                    if next(4) == 0 {
                        p.recheck(next(2) == 0)
                    } else {
                        p.reset_state(next(2) == 0)
                    }
                }
                9 | 10 => now += next(12_000),
                _ => p.on_pick(&limits, now, &mine),
            }
            for _ in 0..2 {
                let want = p.verdict(&limits, now).can_pick();
                if p.attention.load(Relaxed) & CALM != 0 {
                    calm_picks += 1;
                }
                assert_eq!(p.pickable(&limits, now), want, "step {step}");
                fast += usize::from(limits.max_conns == 0 && p.attention.load(Relaxed) & CALM != 0);
            }
        }
        // The fast path was taken, and not only trivially.
        assert!(calm_picks > 10_000 && fast > 10_000, "{calm_picks} {fast}");
    }

    #[test]
    fn outlier_runs_eject_once_and_return_once() {
        let c = OUTLIER;
        let p = PeerShared::default();
        p.reset_state(true);
        assert_eq!(p.outlier_response(500, &c), None);
        assert_eq!(p.outlier_response(502, &c), None);
        // A good answer ends the run.
        assert_eq!(p.outlier_response(200, &c), None);
        assert_eq!(p.outlier_response(500, &c), None);
        assert_eq!(p.outlier_response(500, &c), None);
        assert_eq!(p.outlier_response(503, &c), Some(Outlier::FiveXx(3)));
        assert_eq!(p.eject(&c, 100), Some((1, 1000)));
        // Another worker that saw the same run: no second ejection.
        assert_eq!(p.eject(&c, 100), None);
        assert_eq!(p.verdict(&L, 1099), Verdict::Ejected);
        assert!(!p.take_return(1099));
        assert_eq!(p.verdict(&L, 1100), Verdict::Usable);
        assert!(p.take_return(1100));
        assert!(!p.take_return(1101));
        assert_eq!(p.outlier_error(&c), None);
        assert_eq!(p.outlier_error(&c), Some(Outlier::Errors(2)));
        // The second ejection lasts twice as long.
        assert_eq!(p.eject(&c, 2000), Some((2, 2000)));
        assert_eq!(p.ejections(), 2);
        p.reset_state(true);
        assert_eq!((p.ejections(), p.is_ejected(2001)), (0, false));
    }
}
