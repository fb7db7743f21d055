//! Where a peer is chosen: nginx's per-request peer hooks for an upstream with `lb_upstream`.
//!
//! `init_peer` runs once per request and sets up a small per-request record (which peers this
//! request already tried); `get_peer` runs for every attempt and picks a peer; `free_peer` runs
//! when an attempt ends and does the passive failure accounting in shared memory. `get_peer`
//! takes no lock and allocates nothing: the schedule is worker-private, shared state is read and
//! updated with atomics.

use core::ffi::c_void;
use core::ptr;

use nginx_sys::{
    ngx_http_request_t, ngx_http_upstream_srv_conf_t, ngx_http_upstream_t, ngx_int_t, ngx_log_t,
    ngx_palloc, ngx_pcalloc, ngx_peer_connection_t, ngx_uint_t, NGX_LOG_ERR, NGX_LOG_WARN,
};

use super::conf::srv_conf;
use super::table::{Members, Peer, Upstream};
use crate::balance::p2c::score_less;
use crate::balance::{Fit, Limits, Method, Selector, Verdict};
use crate::shell::nginx::{bytes, lb_debug, now_ms};
use crate::shm::peer::FailOutcome;

const NONE: usize = usize::MAX;

/// Per-request state, allocated from the request pool. Also the request's context of our
/// module, so that `$lb_peer` and friends find the peer chosen last.
pub struct RequestPeers {
    pub upstream: *mut Upstream,
    /// The peers this request chooses from: the upstream's snapshot when it started (held
    /// until the request ends for upstreams whose membership changes at run time).
    pub members: *mut Members,
    u: *mut ngx_http_upstream_t,
    /// Index of the peer of the attempt in progress, or `NONE`.
    current: usize,
    /// Index of the peer chosen last (kept after the attempt ends), or `NONE`.
    pub last: usize,
    /// That peer's health word when it was chosen.
    pub last_health: u64,
    /// When the attempt in progress started (ms).
    started_ms: u64,
    /// Bit set of peers already tried: `tried_inline` for up to 64 peers, else pool memory;
    /// `tried` points to it either way.
    tried_inline: u64,
    tried: *mut u64,
}

impl RequestPeers {
    #[inline(always)]
    fn tried(&self, i: usize) -> bool {
        // SAFETY: `tried` has room for one bit per peer (see `start`).
        unsafe { *self.tried.add(i / 64) & (1 << (i % 64)) != 0 }
    }

    #[inline]
    fn clear_tried(&mut self, i: usize) {
        // SAFETY: as in `tried`.
        unsafe { *self.tried.add(i / 64) &= !(1 << (i % 64)) }
    }

    #[inline]
    fn set_tried(&mut self, i: usize) {
        // SAFETY: as in `tried`.
        unsafe { *self.tried.add(i / 64) |= 1 << (i % 64) }
    }
}

/// This worker's counter of its connections to the peer.
#[inline]
fn mine(p: &Peer) -> &'static core::sync::atomic::AtomicU32 {
    // SAFETY: set with the peer's record (`shell::zone::commit`), then to this worker's row at
    // its start; the zone stays mapped for the life of the process.
    unsafe { &*p.active }
}

#[inline]
fn shared(p: &Peer) -> &'static crate::shm::PeerShared {
    // SAFETY: `shell::zone` sets every peer's record before workers start, and `init_peer`
    // refuses to run for a table whose records are missing; the zone stays mapped for the
    // life of the process, hence 'static.
    unsafe { &*p.shared }
}

/// `us->peer.init`: per-request setup.
///
/// # Safety
/// Called by nginx with a live request that has an upstream, and an upstream block whose
/// `init_upstream` was ours.
pub unsafe extern "C" fn init_peer(
    r: *mut ngx_http_request_t,
    us: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    // SAFETY: nginx calls this with a live request that has an upstream, and our upstream's
    // configuration; everything is allocated from the request pool.
    unsafe {
        let conf = srv_conf(us);
        if conf.is_null() || (*conf).upstream.is_null() {
            return crate::shell::nginx::ERROR;
        }
        let u = (*r).upstream;
        let rp = start((*conf).upstream, (*r).pool, &mut (*u).peer, u);
        if rp.is_null() {
            return crate::shell::nginx::ERROR;
        }
        *(*r).ctx.add(super::conf::ctx_index()) = rp as *mut c_void;
        #[cfg(ngx_feature = "http_ssl")]
        {
            (*u).peer.set_session = Some(set_session);
            (*u).peer.save_session = Some(save_session);
        }
    }
    crate::shell::nginx::OK
}

/// The per-connection setup `init_peer` does for http, shared with `stream {}` (`shell::l4`):
/// catches up with weights, ramps and membership, makes the `RequestPeers` in `pool` and
/// hands `peer` our `get`/`free`. `u` is the http request's upstream (its status and
/// keepalive), null for a stream session. Null when something is missing.
///
/// # Safety
/// `upstream` is a live table of this cycle; `pool` lives as long as the request or session;
/// `peer` is its peer connection.
#[inline(always)]
pub unsafe fn start(
    upstream: *mut Upstream,
    pool: *mut nginx_sys::ngx_pool_t,
    peer: *mut ngx_peer_connection_t,
    u: *mut ngx_http_upstream_t,
) -> *mut RequestPeers {
    // SAFETY: as required by the caller.
    unsafe {
        if !(*upstream).records_ready {
            return ptr::null_mut();
        }
        // Weights set through lb_api: one load and compare.
        (*upstream).follow_weights();
        if (*upstream).slow_start.is_some() {
            (*upstream).follow_ramps(now_ms());
        }
        if (*upstream).dynamic.is_some() {
            // Follows nginx's resolver: O(1) when nothing changed (one counter compared).
            crate::shell::resolve::refresh(&mut *upstream);
            let cln = nginx_sys::ngx_pool_cleanup_add(pool, 0);
            if cln.is_null() {
                return ptr::null_mut();
            }
            Members::retain((*upstream).members);
            (*cln).handler = Some(release_members);
            (*cln).data = (*upstream).members as *mut c_void;
        }
        let members = (*upstream).members;
        let n = (*members).peers.len();
        let rp = ngx_palloc(pool, core::mem::size_of::<RequestPeers>()) as *mut RequestPeers;
        if rp.is_null() {
            return ptr::null_mut();
        }
        let tried = if n > 64 {
            let words = n.div_ceil(64);
            let t = ngx_pcalloc(pool, words * 8) as *mut u64;
            if t.is_null() {
                return ptr::null_mut();
            }
            t
        } else {
            ptr::null_mut()
        };
        rp.write(RequestPeers {
            upstream,
            members,
            u,
            current: NONE,
            last: NONE,
            last_health: 0,
            started_ms: 0,
            tried_inline: 0,
            tried,
        });
        if tried.is_null() {
            (*rp).tried = ptr::addr_of_mut!((*rp).tried_inline);
        }
        (*peer).data = rp as *mut c_void;
        (*peer).get = Some(get_peer);
        (*peer).free = Some(free_peer);
        (*peer).tries = (*members).tries.max(1) as ngx_uint_t;
        rp
    }
}

/// `peer.get`: chooses the peer for this attempt. Nearly every pick is plain: a round-robin
/// upstream without `lb_panic`, `lb_outlier` or `lb_keepalive` (`Upstream::plain`), more than
/// one peer, peers unchanged since the request started, and a primary peer to take. That
/// pick runs here, in a function small enough to keep its walk in registers; every other
/// goes to `get_peer_otherwise` (least_conn's plain pick) and from there to `get_peer_fully`,
/// which also takes a plain pick that found no primary (to try the backups: the walk changed
/// nothing when it found no peer).
unsafe extern "C" fn get_peer(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: `data` is the `RequestPeers` set by `init_peer`; `pc` is the request's peer
    // connection; the table outlives every request of its cycle.
    unsafe {
        let rp = &mut *(data as *mut RequestPeers);
        let up = &*rp.upstream;
        let m = &mut *rp.members;
        let debug = ngx::log::DEBUG && crate::shell::nginx::debug_on((*pc).log);
        if up.plain && !m.single && rp.members == up.members && !debug {
            if let Selector::RoundRobin(rr) = &mut m.primary {
                let now = now_ms();
                let peers = &m.peers[..m.primaries];
                let tried = rp.tried;
                let chosen = rr.pick(
                    #[inline(always)]
                    |j| {
                        // SAFETY: `tried` has a bit for every peer (`start`).
                        *tried.add(j / 64) & (1 << (j % 64)) == 0 && {
                            let p = &peers[j];
                            shared(p).pickable(&p.limits, now)
                        }
                    },
                );
                if let Some(i) = chosen {
                    (*pc).set_cached(0);
                    (*pc).connection = ptr::null_mut();
                    take(pc, rp, &m.peers[i], i, now);
                    return crate::shell::nginx::OK;
                }
            }
        }
        get_peer_otherwise(pc, data)
    }
}

/// `get_peer` when the pick is not plain round-robin: plain least_conn
/// (`Upstream::plain_least_conn`, with or without `lb_keepalive`), else `get_peer_fully`.
/// (Out of line: in `get_peer` it would crowd the round-robin walk out of registers.)
#[inline(never)]
unsafe fn get_peer_otherwise(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: as in `get_peer`.
    unsafe {
        let rp = &mut *(data as *mut RequestPeers);
        let up = &mut *rp.upstream;
        let m = &mut *rp.members;
        let debug = ngx::log::DEBUG && crate::shell::nginx::debug_on((*pc).log);
        if up.plain_least_conn && !m.single && rp.members == up.members && !debug {
            if let Selector::LeastConn(lc) = &mut m.primary {
                let now = now_ms();
                let peers = &m.peers[..m.primaries];
                let tried = rp.tried;
                let chosen = lc.pick(
                    |j| shared(&peers[j]).active(),
                    // SAFETY: `tried` has a bit for every peer (`start`).
                    |j| plain_fit(*tried.add(j / 64) & (1 << (j % 64)) == 0, &peers[j], now),
                    now,
                );
                if let Some(i) = chosen {
                    (*pc).set_cached(0);
                    (*pc).connection = ptr::null_mut();
                    let peer = &m.peers[i];
                    take(pc, rp, peer, i, now);
                    let record = shared(peer);
                    // The count over all workers, with this connection.
                    lc.set_active(i, record.active());
                    if up.keepalive.is_some() && up.owns_slot(peer) {
                        let slot = peer.slot();
                        if let Some(k) = up.keepalive.as_deref_mut() {
                            if crate::shell::keepalive::take(k, slot, pc) {
                                return crate::shell::nginx::DONE;
                            }
                        }
                    }
                    return crate::shell::nginx::OK;
                }
            }
        }
        get_peer_fully(pc, data)
    }
}

/// least_conn's verdict on a primary peer in a plain pick, as `select_otherwise` gives it:
/// one load for a calm peer.
#[inline(always)]
fn plain_fit(untried: bool, p: &Peer, now: u64) -> Fit {
    if !untried {
        return Fit::NotNow;
    }
    let record = shared(p);
    if record.pickable(&p.limits, now) {
        return Fit::Yes;
    }
    match record.verdict(&p.limits, now) {
        Verdict::Usable | Verdict::Probe => Fit::Yes,
        Verdict::Full => Fit::NotNow,
        Verdict::Failed | Verdict::Unhealthy | Verdict::Withdrawn | Verdict::Ejected => {
            Fit::Unavailable
        }
    }
}

/// What every pick does with the peer it chose (`i`, `peer`): counts the attempt in its
/// record, notes it in the request's `rp`, and gives nginx its address.
///
/// # Safety
/// `pc` is the request's peer connection.
#[inline(always)]
unsafe fn take(
    pc: *mut ngx_peer_connection_t,
    rp: &mut RequestPeers,
    peer: &Peer,
    i: usize,
    now: u64,
) {
    let record = shared(peer);
    record.on_pick(&peer.limits, now, mine(peer));
    rp.current = i;
    rp.last = i;
    rp.last_health = record.health().0;
    rp.started_ms = now;
    rp.set_tried(i);
    let (sockaddr, socklen, name) = peer.addr.parts();
    // SAFETY: as required by the caller.
    unsafe {
        (*pc).sockaddr = sockaddr;
        (*pc).socklen = socklen;
        (*pc).name = name as *const _ as *mut _;
    }
}

/// `get_peer` for every pick that is not plain.
#[inline(never)]
unsafe fn get_peer_fully(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: as in `get_peer`.
    unsafe {
        let rp = &mut *(data as *mut RequestPeers);
        let up = &mut *rp.upstream;
        let m = &mut *rp.members;
        let now = now_ms();
        (*pc).set_cached(0);
        (*pc).connection = ptr::null_mut();

        let primaries = m.primaries;
        let decay = up.decay_ms;
        let single = m.single;
        let panic = match &up.panic {
            None => false,
            Some(pn) if now < pn.next_eval_ms => pn.active,
            Some(_) => panic_now(up, m, now, (*pc).log),
        };
        let judge = Judge {
            now,
            single,
            panic,
            current: (rp.members != up.members).then(|| up.current()),
        };
        let chosen = select_in(m, rp, primaries, decay, judge);
        let Some(i) = chosen else {
            (*pc).name = &mut up.name;
            log_no_peer((*pc).log, up, m, now);
            return crate::shell::nginx::BUSY;
        };
        let Some(peer) = m.peers.get(i) else {
            return crate::shell::nginx::ERROR;
        };
        let record = shared(peer);
        if up.outlier.is_some() && record.take_return(now) {
            up.ramp_started();
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                (*pc).log,
                "lb: peer {} in {}upstream \"{}\" is back from outlier ejection",
                bytes(peer.name()).escape_ascii(),
                up.kind.prefix(),
                bytes(&up.name).escape_ascii()
            );
        }
        take(pc, rp, peer, i, now);
        if up.method == Method::LeastConn {
            // Only least_conn needs the sum over all workers' counters.
            if let Some((Selector::LeastConn(lc), j)) = selector_of(m, i) {
                lc.set_active(j, record.active());
            }
        }
        let peer = &m.peers[i];
        lb_debug!(
            (*pc).log,
            "lb: get {} peer, try: {}, peer {} in {}upstream \"{}\" ({}, weight {}, {} active over \
             all workers, response time {}{})",
            up.method.name(),
            (*pc).tries,
            bytes(peer.name()).escape_ascii(),
            up.kind.prefix(),
            bytes(&up.name).escape_ascii(),
            if peer.backup { "backup" } else { "primary" },
            peer.weight,
            record.active(),
            DebugUs(record.response_time_us_at(now, decay)),
            if panic {
                ", panic: all peers count as healthy"
            } else {
                ""
            }
        );
        if up.keepalive.is_some() && up.owns_slot(peer) {
            let slot = peer.slot();
            if let Some(k) = up.keepalive.as_deref_mut() {
                if crate::shell::keepalive::take(k, slot, pc) {
                    lb_debug!(
                        (*pc).log,
                        "lb: keepalive: using idle connection {:p} to peer {}",
                        (*pc).connection,
                        bytes(peer.name()).escape_ascii()
                    );
                    return crate::shell::nginx::DONE;
                }
                lb_debug!(
                    (*pc).log,
                    "lb: keepalive: no idle connection to peer {}, connecting",
                    bytes(peer.name()).escape_ascii()
                );
            }
        }
    }
    crate::shell::nginx::OK
}

/// `peer.free`: an attempt ended; `state` says whether it failed. Plain here, as in
/// `get_peer`: an attempt on a plain upstream (no `lb_outlier` to count it, no `lb_keepalive`
/// to keep its connection) that did not fail.
unsafe extern "C" fn free_peer(
    pc: *mut ngx_peer_connection_t,
    data: *mut c_void,
    state: ngx_uint_t,
) {
    // SAFETY: as in `get_peer`.
    unsafe {
        let rp = &mut *(data as *mut RequestPeers);
        let up = &*rp.upstream;
        let m = &*rp.members;
        let debug = ngx::log::DEBUG && crate::shell::nginx::debug_on((*pc).log);
        if let Some(peer) = m.peers.get(rp.current) {
            if up.plain
                && !m.single
                && state & nginx_sys::NGX_PEER_FAILED as ngx_uint_t == 0
                && !debug
            {
                let record = shared(peer);
                end_plainly(rp, peer, record, up.decay_ms);
                rp.current = NONE;
                if (*pc).tries > 0 {
                    (*pc).tries -= 1;
                }
                return;
            }
        }
        free_peer_otherwise(pc, data, state)
    }
}

/// What a plain `free_peer` records of an attempt that did not fail on `peer` (the request's
/// `rp.current`): an http response's status and time (see `free_peer_fully`), the end of the
/// attempt, and a ramp that it started.
///
/// # Safety
/// `rp` is a live request's; its `u`, when not null, is the http request's upstream.
#[inline(always)]
unsafe fn end_plainly(
    rp: &RequestPeers,
    peer: &Peer,
    record: &crate::shm::PeerShared,
    decay_ms: u64,
) {
    let now = now_ms();
    // SAFETY: as required by the caller.
    unsafe {
        let st = if rp.u.is_null() {
            ptr::null_mut()
        } else {
            (*rp.u).state
        };
        if !st.is_null() && (*st).status != 0 {
            let took_us = now.saturating_sub(rp.started_ms) * 1000;
            record.on_response((*st).status as u16, Some(took_us), now, decay_ms);
        }
        if record.on_done(false, &peer.limits, now, mine(peer)) == Some(FailOutcome::Recovered) {
            (*rp.upstream).ramp_started();
        }
    }
}

/// `free_peer` when the attempt is not plain round-robin: a plain least_conn attempt
/// (`Upstream::plain_least_conn`) that did not fail, else `free_peer_fully`. (Out of line, as
/// `get_peer_otherwise`.)
#[inline(never)]
unsafe fn free_peer_otherwise(
    pc: *mut ngx_peer_connection_t,
    data: *mut c_void,
    state: ngx_uint_t,
) {
    // SAFETY: as in `get_peer`.
    unsafe {
        let rp = &mut *(data as *mut RequestPeers);
        let up = &mut *rp.upstream;
        let m = &mut *rp.members;
        let debug = ngx::log::DEBUG && crate::shell::nginx::debug_on((*pc).log);
        let i = rp.current;
        if let Some(peer) = m.peers.get(i) {
            if up.plain_least_conn
                && !m.single
                && state & nginx_sys::NGX_PEER_FAILED as ngx_uint_t == 0
                && !debug
            {
                let record = shared(peer);
                end_plainly(rp, peer, record, up.decay_ms);
                let (slot, owned) = (peer.slot(), up.owns_slot(peer));
                if let Some((Selector::LeastConn(lc), j)) = selector_of(m, i) {
                    lc.set_active(j, record.active());
                }
                if let (Some(k), false) = (up.keepalive.as_deref_mut(), rp.u.is_null()) {
                    // A connection to a peer that left is not kept (see `free_peer_fully`).
                    crate::shell::keepalive::keep(k, slot, pc, rp.u, !owned);
                }
                rp.current = NONE;
                if (*pc).tries > 0 {
                    (*pc).tries -= 1;
                }
                return;
            }
        }
        free_peer_fully(pc, data, state)
    }
}

/// `free_peer` for every attempt that is not plain.
#[inline(never)]
unsafe fn free_peer_fully(pc: *mut ngx_peer_connection_t, data: *mut c_void, state: ngx_uint_t) {
    // SAFETY: as in `get_peer`.
    unsafe {
        let rp = &mut *(data as *mut RequestPeers);
        if rp.current != NONE {
            let up = &mut *rp.upstream;
            let m = &mut *rp.members;
            let peer = &m.peers[rp.current];
            let attempt_failed = state & nginx_sys::NGX_PEER_FAILED as ngx_uint_t != 0;
            let mut failed = attempt_failed;
            if failed && (*pc).cached() != 0 {
                // A reused idle connection that fails was most likely closed by the backend
                // just as we reused it (nginx retries such a request on a fresh connection):
                // not the peer's fault, and the peer may be tried again for this request.
                failed = false;
                rp.clear_tried(rp.current);
            }
            let now = now_ms();
            let record = shared(peer);
            // A status means the backend answered this attempt (nginx sets it while parsing
            // the status line); connection failures and timeouts before that leave it 0.
            // A stream session (no `u`) has no status: only connection failures count.
            let st = if rp.u.is_null() {
                ptr::null_mut()
            } else {
                (*rp.u).state
            };
            let status = if st.is_null() { 0 } else { (*st).status as u16 };
            if status != 0 {
                let took_us = now.saturating_sub(rp.started_ms) * 1000;
                record.on_response(status, Some(took_us), now, up.decay_ms);
            }
            if let Some(oc) = up.outlier {
                let run = if status != 0 {
                    record.outlier_response(status, &oc)
                } else if failed {
                    record.outlier_error(&oc)
                } else {
                    None
                };
                if let Some(why) = run {
                    eject(up, m, rp.current, why, &oc, now, (*pc).log);
                }
            }
            let outcome = if m.single {
                // As nginx does for its `single` peer: a failure is counted in the totals but
                // never makes the only peer unavailable, and there is no other peer to retry.
                (*pc).tries = 0;
                record.on_done_single(failed, mine(peer))
            } else {
                record.on_done(failed, &peer.limits, now, mine(peer))
            };
            if outcome == Some(FailOutcome::Recovered) {
                up.ramp_started();
            }
            lb_debug!(
                (*pc).log,
                "lb: free {} peer, try: {}, peer {} in {}upstream \"{}\": {}, status {}, {} ms{}",
                up.method.name(),
                (*pc).tries,
                bytes(peer.name()).escape_ascii(),
                up.kind.prefix(),
                bytes(&up.name).escape_ascii(),
                if failed {
                    "failed"
                } else if attempt_failed {
                    "failed on a reused idle connection (not counted against the peer)"
                } else {
                    "ok"
                },
                status,
                now.saturating_sub(rp.started_ms),
                match outcome {
                    Some(FailOutcome::MadeUnavailable) => ", now unavailable",
                    _ => "",
                }
            );
            if outcome == Some(FailOutcome::MadeUnavailable) {
                ngx::ngx_log_error!(
                    NGX_LOG_WARN,
                    (*pc).log,
                    "lb: peer {} in {}upstream \"{}\" is unavailable for {}s after {} failure(s)",
                    bytes(peer.name()).escape_ascii(),
                    up.kind.prefix(),
                    bytes(&up.name).escape_ascii(),
                    peer.limits.fail_timeout_ms / 1000,
                    peer.limits.max_fails
                );
            }
            let lower_weight = failed && !m.single;
            let max_fails = peer.limits.max_fails;
            let (slot, owned) = (peer.slot(), up.owns_slot(peer));
            if lower_weight || up.method == Method::LeastConn {
                match selector_of(m, rp.current) {
                    Some((Selector::LeastConn(lc), j)) => lc.set_active(j, record.active()),
                    // nginx lowers a failed peer's effective weight for a while.
                    Some((Selector::RoundRobin(rr), j)) if lower_weight => rr.failed(j, max_fails),
                    _ => {}
                }
            }
            if let (Some(k), false) = (up.keepalive.as_deref_mut(), rp.u.is_null()) {
                // A connection to a peer that left is not kept (it stays with the request and
                // nginx closes it).
                let c = (*pc).connection;
                let kept =
                    crate::shell::keepalive::keep(k, slot, pc, rp.u, attempt_failed || !owned);
                lb_debug!(
                    (*pc).log,
                    "lb: keepalive: {} connection {:p} to peer {}",
                    if kept { "keeping idle" } else { "not keeping" },
                    c,
                    bytes(m.peers[rp.current].name()).escape_ascii()
                );
            }
            rp.current = NONE;
        }
        if (*pc).tries > 0 {
            (*pc).tries -= 1;
        }
    }
}

/// A response-time average for a `debug` line: `1234us`, or `none yet`.
struct DebugUs(Option<u64>);

impl core::fmt::Display for DebugUs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(us) => write!(f, "{us}us"),
            None => f.write_str("none yet"),
        }
    }
}

/// `lb_panic`: whether the upstream is in panic mode now, as this worker counted its primary
/// peers at most `EVALUATE_EVERY_MS` ago. Entering and leaving are logged once for all
/// workers (a flag in the first primary peer's record).
///
/// # Safety
/// `log` is the request's log.
#[cold]
unsafe fn panic_now(up: &mut Upstream, m: &Members, now: u64, log: *mut ngx_log_t) -> bool {
    use crate::balance::panic::{in_panic, EVALUATE_EVERY_MS};
    let Some(pn) = up.panic.as_mut() else {
        return false;
    };
    pn.next_eval_ms = now + EVALUATE_EVERY_MS;
    let (mut eligible, mut available) = (0, 0);
    for p in &m.peers[..m.primaries] {
        if p.down {
            continue;
        }
        match shared(p).verdict(&p.limits, now) {
            Verdict::Withdrawn => continue,
            Verdict::Usable | Verdict::Probe | Verdict::Full => available += 1,
            Verdict::Failed | Verdict::Unhealthy | Verdict::Ejected => {}
        }
        eligible += 1;
    }
    // Backups come first: while one can take requests, the primaries' state is no panic
    // (nginx's order: backups when no primary can be chosen).
    let backup_ok = || {
        m.peers[m.primaries..]
            .iter()
            .any(|p| !p.down && shared(p).verdict(&p.limits, now).can_pick())
    };
    let on = in_panic(available, eligible, pn.percent) && !backup_ok();
    pn.active = on;
    let percent = pn.percent;
    if let Some(first) = m.peers[..m.primaries].first() {
        if shared(first).set_panic(on) {
            // SAFETY: as required by the caller; the upstream's name lives for the cycle.
            let name = unsafe { bytes(&up.name) }.escape_ascii();
            if on {
                ngx::ngx_log_error!(
                    NGX_LOG_WARN,
                    log,
                    "lb: {}upstream \"{}\" in panic mode: {} of {} peers healthy (lb_panic {}%): \
                     requests go to all of them",
                    up.kind.prefix(),
                    name,
                    available,
                    eligible,
                    percent
                );
            } else {
                ngx::ngx_log_error!(
                    nginx_sys::NGX_LOG_NOTICE,
                    log,
                    "lb: {}upstream \"{}\" leaves panic mode: {} of {} peers healthy",
                    up.kind.prefix(),
                    name,
                    available,
                    eligible
                );
            }
        }
    }
    on
}

/// What a pick needs to judge a peer: the time, `single` (the upstream's only peer, which
/// passive failures never make unavailable), `panic` (`lb_panic` says to choose peers that
/// failed or are unhealthy as if they were not) and, for a request that started before the
/// peers changed (it keeps its snapshot), the current snapshot: it never chooses a peer that
/// has left since.
#[derive(Clone, Copy)]
struct Judge<'a> {
    now: u64,
    single: bool,
    panic: bool,
    current: Option<&'a Members>,
}

impl Judge<'_> {
    /// Nearly every pick: the records' verdicts are taken as they are.
    #[inline(always)]
    fn plain(&self) -> bool {
        !self.single && !self.panic && self.current.is_none()
    }

    /// Whether `p` may take this attempt.
    #[inline(always)]
    fn can_pick(&self, p: &Peer) -> bool {
        if self.plain() {
            return shared(p).pickable(&p.limits, self.now);
        }
        self.can_pick_slowly(p)
    }

    /// `can_pick` with `single`, `panic` or an older snapshot (kept out of line: the walk
    /// inlines `can_pick` for every peer).
    #[inline(never)]
    fn can_pick_slowly(&self, p: &Peer) -> bool {
        self.verdict(p).can_pick()
    }

    /// `p`'s verdict as this pick sees it.
    #[inline]
    fn verdict(&self, p: &Peer) -> Verdict {
        if self.current.is_some_and(|c| !c.still_has(p)) {
            return Verdict::Unhealthy;
        }
        let v = if self.single {
            let no_fails = Limits {
                max_fails: 0,
                ..p.limits
            };
            // Nor is it ever ejected (`lb_outlier`).
            shared(p).verdict_with(&no_fails, self.now, false)
        } else {
            shared(p).verdict(&p.limits, self.now)
        };
        if self.panic
            && matches!(v, Verdict::Failed | Verdict::Unhealthy | Verdict::Ejected)
            && !p.down
        {
            Verdict::Usable
        } else {
            v
        }
    }
}

/// Chooses among `peers` (one list: primaries or backups, which start at index `base` of the
/// upstream) with the list's method, as `judge` sees the peers.
#[inline(always)]
fn select(
    sel: &mut Selector,
    peers: &[Peer],
    rp: &RequestPeers,
    base: usize,
    decay_ms: u64,
    judge: Judge<'_>,
) -> Option<usize> {
    let now = judge.now;
    match sel {
        // The walk judges every peer: the plain case is decided once, outside it, and is
        // the only one inlined into `get_peer` (what the other arms capture would be set up
        // on every pick otherwise).
        Selector::RoundRobin(rr) if judge.plain() => rr
            .pick(
                #[inline(always)]
                |j| {
                    !rp.tried(base + j) && {
                        let p = &peers[j];
                        shared(p).pickable(&p.limits, now)
                    }
                },
            )
            .map(|j| base + j),
        _ => select_otherwise(sel, peers, rp, base, decay_ms, judge),
    }
}

/// `select` for least_conn, p2c, and round-robin when the pick is not plain.
#[inline(never)]
fn select_otherwise(
    sel: &mut Selector,
    peers: &[Peer],
    rp: &RequestPeers,
    base: usize,
    decay_ms: u64,
    judge: Judge<'_>,
) -> Option<usize> {
    let now = judge.now;
    let chosen = match sel {
        Selector::RoundRobin(rr) => rr.pick(|j| !rp.tried(base + j) && judge.can_pick(&peers[j])),
        Selector::LeastConn(lc) => lc.pick(
            |j| shared(&peers[j]).active(),
            |j| {
                if rp.tried(base + j) {
                    return Fit::NotNow;
                }
                match judge.verdict(&peers[j]) {
                    Verdict::Usable | Verdict::Probe => Fit::Yes,
                    Verdict::Full => Fit::NotNow,
                    Verdict::Failed
                    | Verdict::Unhealthy
                    | Verdict::Withdrawn
                    | Verdict::Ejected => Fit::Unavailable,
                }
            },
            now,
        ),
        Selector::P2c(p) => p.pick(
            |j| !rp.tried(base + j) && judge.can_pick(&peers[j]),
            |a, b| {
                let (sa, sb) = (shared(&peers[a]), shared(&peers[b]));
                let load =
                    |s: &crate::shm::PeerShared| (s.active(), s.response_time_us_at(now, decay_ms));
                score_less(load(sa), load(sb))
            },
        ),
    };
    chosen.map(|j| base + j)
}

/// The selector holding peer `i` of the upstream, and the peer's index in it.
fn selector_of(m: &mut Members, i: usize) -> Option<(&mut Selector, usize)> {
    if i == NONE || i >= m.peers.len() {
        None
    } else if i < m.primaries {
        Some((&mut m.primary, i))
    } else {
        Some((&mut m.backup, i - m.primaries))
    }
}

/// Chooses among the primaries, then the backups (`lb_panic` is for the primaries only).
#[inline(always)]
fn select_in(
    m: &mut Members,
    rp: &RequestPeers,
    primaries: usize,
    decay: u64,
    judge: Judge<'_>,
) -> Option<usize> {
    select(&mut m.primary, &m.peers[..primaries], rp, 0, decay, judge)
        .or_else(|| select_backup(m, rp, primaries, decay, judge))
}

/// The backups' turn (out of line: the primaries' pick is the one every request makes).
#[inline(never)]
fn select_backup(
    m: &mut Members,
    rp: &RequestPeers,
    primaries: usize,
    decay: u64,
    judge: Judge<'_>,
) -> Option<usize> {
    let backups = Judge {
        panic: false,
        ..judge
    };
    select(
        &mut m.backup,
        &m.peers[primaries..],
        rp,
        primaries,
        decay,
        backups,
    )
}

/// The request pool's cleanup for a snapshot the request held.
unsafe extern "C" fn release_members(data: *mut c_void) {
    // SAFETY: `data` is the snapshot `init_peer` retained for this request.
    unsafe { Members::release(data as *mut Members) };
}

/// A run of 5xx or errors reached `lb_outlier`'s threshold for peer `i`: ejects it, unless
/// `max_percent` of the upstream's peers are ejected already. Logged once, by the worker whose
/// ejection took effect.
///
/// # Safety
/// `log` is the request's log.
#[cold]
unsafe fn eject(
    up: &Upstream,
    m: &Members,
    i: usize,
    why: crate::shm::peer::Outlier,
    oc: &crate::balance::outlier::OutlierConf,
    now: u64,
    log: *mut ngx_log_t,
) {
    let peer = &m.peers[i];
    let record = shared(peer);
    if record.is_ejected(now) {
        // Answers still in flight when another worker ejected it.
        record.forget_runs();
        return;
    }
    // Peers that count: not down, not taken out by an operator, still members.
    let current = up.current();
    let eligible: Vec<&Peer> = m
        .peers
        .iter()
        .filter(|p| {
            !p.down
                && current.still_has(p)
                && shared(p).verdict(&p.limits, now) != Verdict::Withdrawn
        })
        .collect();
    let ejected = eligible
        .iter()
        .filter(|p| shared(p).is_ejected(now))
        .count();
    // Never the last peer that can take requests.
    let others = eligible
        .iter()
        .filter(|p| !core::ptr::eq(p.shared, peer.shared))
        .filter(|p| {
            matches!(
                shared(p).verdict(&p.limits, now),
                Verdict::Usable | Verdict::Probe | Verdict::Full
            )
        })
        .count();
    // SAFETY: the upstream's and the peer's names live as long as the snapshot.
    let (name, upstream) = unsafe { (bytes(peer.name()), bytes(&up.name)) };
    let what = match why {
        crate::shm::peer::Outlier::FiveXx(n) => format!("{n} responses with status 500 or more"),
        crate::shm::peer::Outlier::Errors(n) => format!("{n} connection errors or timeouts"),
    };
    if others == 0 || !oc.may_eject(ejected, eligible.len()) {
        record.forget_runs();
        ngx::ngx_log_error!(
            nginx_sys::NGX_LOG_INFO,
            log,
            "lb: peer {} in {}upstream \"{}\" not ejected after {} in a row: {} of {} peers are \
             ejected already (max_percent={}), {} other can take requests",
            name.escape_ascii(),
            up.kind.prefix(),
            upstream.escape_ascii(),
            what,
            ejected,
            eligible.len(),
            oc.max_percent,
            others
        );
        return;
    }
    if let Some((n, ms)) = record.eject(oc, now) {
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "lb: peer {} in {}upstream \"{}\" ejected for {}s after {} in a row (ejection {})",
            name.escape_ascii(),
            up.kind.prefix(),
            upstream.escape_ascii(),
            ms as f64 / 1000.0,
            what,
            n
        );
    }
}

/// Says why no peer could be chosen.
///
/// # Safety
/// `log` must be the request's log.
unsafe fn log_no_peer(log: *mut ngx_log_t, up: &Upstream, m: &Members, now: u64) {
    let (mut down, mut failed, mut full, mut unhealthy, mut withdrawn, mut ejected) =
        (0, 0, 0, 0, 0, 0);
    for p in &m.peers {
        if p.down {
            down += 1;
            continue;
        }
        match shared(p).verdict(&p.limits, now) {
            crate::balance::Verdict::Failed => failed += 1,
            crate::balance::Verdict::Full => full += 1,
            crate::balance::Verdict::Unhealthy => unhealthy += 1,
            crate::balance::Verdict::Withdrawn => withdrawn += 1,
            crate::balance::Verdict::Ejected => ejected += 1,
            _ => {}
        }
    }
    ngx::ngx_log_error!(
        NGX_LOG_ERR,
        log,
        "lb: no available peer in {}upstream \"{}\" ({} peers: {} down, {} failed, {} at max_conns, \
         {} unhealthy, {} withdrawn by the API, {} ejected, the rest already tried)",
        up.kind.prefix(),
        // SAFETY: the upstream's name is an nginx string from the configuration pool.
        unsafe { bytes(&up.name) }.escape_ascii(),
        m.peers.len(),
        down,
        failed,
        full,
        unhealthy,
        withdrawn,
        ejected
    );
}

/// `peer.set_session` (TLS to backends, `proxy_ssl_session_reuse on`, nginx's default): offers
/// the session saved from this worker's last connection to the chosen peer, so that the
/// handshake is an abbreviated one.
#[cfg(ngx_feature = "http_ssl")]
unsafe extern "C" fn set_session(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: `data` is the request's `RequestPeers`; `pc->connection` is the new connection
    // to the peer chosen for this attempt, with its TLS object created; the saved session
    // holds a reference of its own, and SSL_set_session takes another.
    unsafe {
        let rp = &*(data as *const RequestPeers);
        let up = &*rp.upstream;
        let m = &*rp.members;
        let Some(peer) = m.peers.get(rp.current) else {
            return crate::shell::nginx::OK;
        };
        if !up.owns_slot(peer) {
            return crate::shell::nginx::OK;
        }
        let session = up
            .sessions
            .borrow()
            .get(peer.slot())
            .map_or(ptr::null_mut(), core::cell::Cell::get);
        if session.is_null() {
            return crate::shell::nginx::OK;
        }
        nginx_sys::ngx_ssl_set_session((*pc).connection, session as *mut nginx_sys::SSL_SESSION)
    }
}

/// `peer.save_session`: keeps the connection's session (a new reference) for the peer's next
/// connection, releasing the one it replaces. nginx calls it after the handshake, and again
/// for every session ticket the backend sends later (TLS 1.3), while the connection belongs
/// to the request.
#[cfg(ngx_feature = "http_ssl")]
unsafe extern "C" fn save_session(pc: *mut ngx_peer_connection_t, data: *mut c_void) {
    // SAFETY: as above; `last` is the peer of this request's connection (set with `current`
    // when it was chosen, kept after the attempt); ngx_ssl_get_session returns a new reference
    // (or null), which the peer then owns.
    unsafe {
        let rp = &*(data as *const RequestPeers);
        let up = &*rp.upstream;
        let m = &*rp.members;
        let Some(peer) = m.peers.get(rp.last) else {
            return;
        };
        if !up.owns_slot(peer) {
            return;
        }
        let c = (*pc).connection;
        if c.is_null() || (*c).ssl.is_null() {
            return;
        }
        let session = nginx_sys::ngx_ssl_get_session(c);
        if session.is_null() {
            return;
        }
        let mut sessions = up.sessions.borrow_mut();
        if sessions.len() <= peer.slot() {
            sessions.resize_with(peer.slot() + 1, Default::default);
        }
        let old = sessions[peer.slot()].replace(session as *mut c_void);
        if !old.is_null() {
            nginx_sys::SSL_SESSION_free(old as *mut nginx_sys::SSL_SESSION);
        }
    }
}
