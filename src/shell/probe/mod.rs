//! Where a probe is sent: each worker watches its share of the checked peers (`due::home`: one
//! worker per peer), all on one timer over a due-time queue (`health::due`), and runs probes on
//! its own event loop — no thread, no blocking call.
//!
//! Coordination: a probe runs only in the worker that wins the peer's lease in shared memory
//! (`PeerShared::take_lease`, a compare-and-swap of the next due time), so each peer is probed
//! once per interval in total, also while the workers of two configurations overlap after a
//! reload. A worker that dies mid-probe leaves nothing held: the next probe is due an interval
//! later, and the master's replacement (the same `ngx_worker`) watches the same peers.
//!
//! Memory: between attempts a peer costs its `Watch` (about a hundred bytes); the `Probe` with
//! its connection state exists while an attempt runs or its connection is kept for the next
//! one, and is freed (from a posted event) when the attempt ends without keeping one.
//!
//! One probe: connect (non-blocking, `ngx_event_connect_peer`) → for `https` a TLS handshake
//! (SNI, optional verification) → send the request → read at most 16 KiB and judge it. The
//! whole exchange must finish within `timeout`. The timer is cancelable, so it never holds up a
//! worker's graceful exit after a reload; an exiting worker starts no new probe.
//!
//! Keepalive (`keepalive=on`, the default for http/https): when the response allows it, the
//! connection stays open, idle, for the peer's next probe — no connect, no handshake per
//! interval. An idle connection is closed when the peer sends anything or closes it, when the
//! worker exits (it is marked idle for nginx), and instead of being reused once it is older
//! than `keepalive_time`. It is checked (nothing pending, not closed) just before it is reused;
//! a request that still finds it closed under it is sent again on a new connection, within
//! the same timeout.
//! A worker keeps at most a quarter of its `worker_connections` idle for probes. The worker
//! that ran the last probe takes the next lease at once and others only after a short grace
//! period (a new worker, or one of a new configuration), so that one connection per peer
//! suffices.

use core::cell::{Cell, RefCell};
use core::ffi::c_void;
use core::hash::BuildHasherDefault;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::rc::Rc;

use nginx_sys::{
    ngx_close_connection, ngx_connection_t, ngx_create_pool, ngx_cycle_t, ngx_destroy_pool,
    ngx_event_connect_peer, ngx_event_get_peer, ngx_event_t, ngx_handle_read_event,
    ngx_handle_write_event, ngx_int_t, ngx_log_t, ngx_peer_connection_t, ngx_pool_t,
    ngx_regex_exec, ngx_ssl_check_host, ngx_ssl_create_connection, ngx_ssl_handshake,
    ngx_ssl_shutdown, ngx_str_t, sockaddr, socklen_t, NGX_LOG_ALERT, NGX_LOG_WARN, NGX_SSL_BUFFER,
    NGX_SSL_CLIENT,
};

use super::check::CheckSetup;
use crate::balance::membership::{Key, KeyHasher};
use crate::conf::time::MAX_MS;
use crate::health::config::{CheckConf, HttpMethod, Identity, Kind, MAX_RESPONSE};
use crate::health::due::{self, DueQueue, Id};
use crate::health::reason::Reason;
use crate::health::response::{Parser, Progress, ResponseError};
use crate::health::schedule;
use crate::health::state::Transition;
use crate::shell::nginx::{bytes, exiting, lb_debug, now_ms, peek, Peek, AGAIN, ERROR, OK};
use crate::shell::table::{Addr, Peer, Upstream};
use crate::shm::PeerShared;

mod conn;
mod expect;
mod http;
mod kinds;
mod pool;
mod tls;

use conn::*;
use expect::stream_exchange;
use http::*;
use kinds::check_type;
use pool::*;
use tls::*;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Idle,
    Connecting,
    Handshaking,
    Sending,
    Reading,
}

/// A peer's last resumable TLS session (an OpenSSL `SSL_SESSION` holding one reference, or
/// null), shared by the peer's watch and its probe while one runs.
type Session = Rc<Cell<*mut nginx_sys::SSL_SESSION>>;

/// A checked peer, as this worker keeps it between probes (a `Probe`, with its connection
/// state, exists only while an attempt runs or its connection is kept for the next one).
struct Watch {
    upstream: *const Upstream,
    /// The peer's record.
    shared: *const PeerShared,
    /// The peer's address and texts (a reference, not a copy).
    addr: Addr,
    /// The probe while an attempt runs or keeps a connection, else null.
    probe: *mut Probe,
}

impl Watch {
    /// The upstream's `lb_check` (every watched peer's upstream has one).
    fn setup(&self) -> *const CheckSetup {
        // SAFETY: the upstream lives as long as the configuration, which outlives its watches.
        match unsafe { &(*self.upstream).check } {
            Some(setup) => &**setup,
            None => unreachable!("a watched peer's upstream has lb_check"),
        }
    }
}

/// A peer's watch in this worker (`start_probe`), to `retire` it.
pub type Handle = Id;

/// This worker's checked peers and the one timer that serves them all.
struct Clock {
    queue: DueQueue<Watch>,
    /// Fires when the earliest peer is due.
    event: *mut ngx_event_t,
    /// Frees the probes of attempts that ended (posted: never from a probe's own handler).
    reaper: *mut ngx_event_t,
    reap: Vec<Id>,
    rng: u64,
    /// This worker's place among the workers (`nginx::worker_share`): it watches the peers
    /// whose records `due::home` gives it.
    worker: usize,
    workers: usize,
    /// When this worker started watching, and when it next looks for peers whose home worker
    /// stopped probing them (`adopt_orphans`); the keys of the configured peers it adopted.
    started_ms: u64,
    next_sweep_ms: u64,
    adopted: HashSet<Key, BuildHasherDefault<KeyHasher>>,
    /// The smallest `window` of the peers watched: wake-ups are at least this far apart, so
    /// that peers due close together are handled together (none of them late: each may be
    /// handled anywhere in its window).
    min_window: u64,
    /// The TLS session of each watch of an `https` check (a map, not a field of every watch:
    /// a watch is per peer, per worker, at 100,000 peers).
    sessions: HashMap<Id, Session>,
}

/// This worker's clock. A static rather than a thread-local: it is never dropped, so what it
/// holds at exit stays reachable (for valgrind) instead of being freed under kept connections.
struct WorkerClock(RefCell<Option<Clock>>);

// SAFETY: nginx runs a worker's modules on one thread; the clock is only touched from its
// event handlers and process hooks.
unsafe impl Sync for WorkerClock {}

static CLOCK: WorkerClock = WorkerClock(RefCell::new(None));

/// Runs `f` on this worker's clock (made on first use). Borrows are short: nothing inside `f`
/// reaches `with_clock` again (making a probe's data is the most any `f` does).
fn with_clock<R>(f: impl FnOnce(&mut Clock) -> R) -> R {
    let mut c = CLOCK.0.borrow_mut();
    let clock = c.get_or_insert_with(|| {
        // SAFETY: zeroed events are nginx's initial state; the cycle's log is live in a
        // worker. The events live as long as the worker (leaked on purpose).
        unsafe {
            let cycle = nginx_sys::ngx_cycle;
            let log = cycle.as_ref().map_or(ptr::null_mut(), |c| c.log);
            let event: *mut ngx_event_t = Box::into_raw(Box::new(core::mem::zeroed()));
            (*event).handler = Some(on_clock);
            (*event).data = crate::shell::nginx::no_connection();
            (*event).log = log;
            (*event).set_cancelable(1);
            let reaper: *mut ngx_event_t = Box::into_raw(Box::new(core::mem::zeroed()));
            (*reaper).handler = Some(on_reap);
            (*reaper).data = crate::shell::nginx::no_connection();
            (*reaper).log = log;
            let (worker, workers) = crate::shell::nginx::worker_share();
            let now = now_ms();
            Clock {
                queue: DueQueue::default(),
                event,
                reaper,
                reap: Vec::new(),
                rng: u64::from(crate::shell::nginx::pid()) << 1 | 1,
                worker,
                workers,
                started_ms: now,
                next_sweep_ms: now.saturating_add(SWEEP_MS),
                adopted: HashSet::default(),
                min_window: u64::MAX,
                sessions: HashMap::new(),
            }
        }
    });
    f(clock)
}

impl Clock {
    fn random(&mut self, below: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        if below == 0 {
            0
        } else {
            self.rng % below
        }
    }
}

/// A peer may be handled up to this many ms before it is due (at most a tenth of its interval,
/// see `window`), so that peers due close together are handled in one wake-up.
const COALESCE_MS: u64 = 100;
/// At most this many due peers are handled per wake-up (the rest on the next event loop turn),
/// so that a worker with many peers due at once never stalls its requests.
const BATCH: usize = 256;

/// One peer's prober while an attempt runs (or its connection is kept for the next one).
pub struct Probe {
    /// This probe, as allocated: connections carry it (not a pointer derived from a borrow).
    this: *mut Probe,
    /// The watch this probe belongs to.
    id: Id,
    upstream: *const Upstream,
    /// The peer's record.
    shared: *const PeerShared,
    /// Keeps a resolved peer's address text alive.
    _addr: Addr,
    setup: *const CheckSetup,
    /// The address probed (the peer's, with `port=` applied) and its text; separate
    /// allocations, as nginx keeps pointers to them in the connection and reads them while a
    /// handler holds the probe.
    addr: *mut [u64; 16],
    socklen: socklen_t,
    name: *mut ngx_str_t,
    request: Vec<u8>,
    sni: Option<CString>,
    /// With `verify=on`: the name the certificate must match, or else the IP address.
    verify_name: Option<CString>,
    verify_ip: Option<CString>,
    /// A private log: the cycle's, with everything below `alert` muted (nginx reports failed
    /// connects at `error` and failed TLS handshakes at `crit`), so that failing probes do not
    /// write a line per interval; their reason is logged once, on the state change.
    /// (In an allocation of its own: nginx writes to a connection's log.)
    log: *mut ngx_log_t,
    // The attempt in progress.
    stage: Stage,
    pc: ngx_peer_connection_t,
    conn: *mut ngx_connection_t,
    pool: *mut ngx_pool_t,
    sent: usize,
    buf: Vec<u8>,
    /// The parse of the response in `buf` so far (each read parses only what is new).
    parser: Parser,
    deadline: u64,
    /// The attempt runs on a connection kept from an earlier probe.
    reused: bool,
    /// The response allows the connection to carry the next probe.
    reusable: bool,
    /// The connection is kept idle for the next probe.
    parked: bool,
    /// The peer's last resumable TLS session, offered on the next new connection (with
    /// `keepalive=off`, or after a kept connection was closed).
    session: Option<Session>,
    /// When the attempt's (or the kept) connection was established.
    connected_at: u64,
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Probe {
    fn upstream(&self) -> &Upstream {
        // SAFETY: the table lives in the cycle's pool, longer than any worker's probes.
        unsafe { &*self.upstream }
    }
    fn setup(&self) -> &CheckSetup {
        // SAFETY: as above (owned by the upstream's configuration).
        unsafe { &*self.setup }
    }
    fn shared(&self) -> &PeerShared {
        // SAFETY: records are set before the probe is made (see `shell::zone`,
        // `shell::resolve`) and the zone stays mapped for the life of the process.
        unsafe { &*self.shared }
    }
    fn keepalive(&self) -> bool {
        keeps_connections(self.setup())
    }
    /// The peer's TLS session to resume, if any.
    fn tls_session(&self) -> *mut nginx_sys::SSL_SESSION {
        self.session.as_ref().map_or(ptr::null_mut(), |s| s.get())
    }
    /// Replaces the peer's TLS session, returning the old one (the caller frees it).
    fn replace_tls_session(
        &mut self,
        session: *mut nginx_sys::SSL_SESSION,
    ) -> *mut nginx_sys::SSL_SESSION {
        match &self.session {
            Some(s) => s.replace(session),
            None => session,
        }
    }
}

fn keeps_connections(setup: &CheckSetup) -> bool {
    setup.conf.keepalive && setup.conf.kind.is_http()
}

/// Starts watching every checked peer of this worker (from the module's `init_process`).
///
/// # Safety
/// Called in a new worker with its cycle.
pub unsafe fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: reading nginx's process type and the cycle's http configuration, which the
    // worker inherited.
    unsafe {
        if !crate::shell::nginx::serves_requests() {
            return OK;
        }
        let main = crate::shell::conf::cycle_main_conf(cycle);
        if main.is_null() {
            return OK;
        }
        let checked: usize = (*main)
            .upstreams
            .iter()
            .filter(|&&u| (*u).check.is_some() && (*u).dynamic.is_none())
            .map(|&u| (*u).current().peers.len())
            .sum();
        with_clock(|c| c.queue.reserve(checked.div_ceil(c.workers)));
        for &u in &(*main).upstreams {
            let Some(setup) = (*u).check.as_deref() else {
                continue;
            };
            if (*u).dynamic.is_some() {
                // Started by `shell::resolve::worker_start`, which follows the peers.
                continue;
            }
            for peer in &(*u).current().peers {
                if peer.down {
                    continue;
                }
                start_probe(cycle, u, peer, setup);
            }
        }
    }
    OK
}

/// Starts watching `peer` when it is this worker's to probe (`due::home`; `None` when not): a
/// peer whose record says nothing is due yet (new) is probed at once, spread over a quarter
/// interval. It is watched as long as the worker runs, or until `retire` (its resolved address
/// left).
///
/// # Safety
/// In a worker: `u` and `setup` outlive the watch; `peer` has its record.
pub unsafe fn start_probe(
    _cycle: *mut ngx_cycle_t,
    u: *const Upstream,
    peer: &Peer,
    setup: &CheckSetup,
) -> Option<Handle> {
    // SAFETY: as required by the caller.
    unsafe { watch(u, peer, setup, false) }
}

/// `start_probe`, or with `adopt` regardless of the peer's home worker.
///
/// # Safety
/// As for `start_probe`.
unsafe fn watch(
    u: *const Upstream,
    peer: &Peer,
    setup: &CheckSetup,
    adopt: bool,
) -> Option<Handle> {
    let record = peer.record();
    let now = now_ms();
    // SAFETY: the record is set (required by the caller) and mapped for the process.
    let (due, _) = lease(unsafe { &*peer.shared }, &setup.conf, now);
    let id = with_clock(|c| {
        if !adopt && !due::home(record, c.workers, c.worker) {
            return None;
        }
        let interval = setup.conf.interval_ms;
        c.min_window = c.min_window.min(window(interval));
        let at = if due > now {
            due
        } else {
            now + c.random(interval / 4 + 1)
        };
        let at = at.saturating_sub(window(interval));
        let watch = Watch {
            upstream: u,
            shared: peer.shared,
            addr: peer.addr.clone(),
            probe: ptr::null_mut(),
        };
        let id = c.queue.insert(watch, at);
        if check_type(setup.conf.kind).tls {
            c.sessions.insert(id, Rc::new(Cell::new(ptr::null_mut())));
        }
        Some(id)
    })?;
    arm_clock(now);
    Some(id)
}

/// The peer's probe lease (its next due time, and the pid of the last prober), with a due
/// time that a configuration with a longer interval set before a reload moved to an interval
/// from now (`schedule::capped_due`): a shorter interval takes effect at once.
fn lease(shared: &crate::shm::PeerShared, conf: &CheckConf, now: u64) -> (u64, u32) {
    let (due, pid) = shared.lease();
    match schedule::capped_due(now, due, conf.interval_ms, conf.jitter_ms) {
        Some(capped) if shared.move_lease(due, capped) => (capped, pid),
        // Another worker moved it first.
        Some(_) => shared.lease(),
        None => (due, pid),
    }
}

/// (Re)arms the clock for the earliest due peer (or the next sweep for orphans), unless it
/// fires before that anyway.
fn arm_clock(now: u64) {
    let (event, next) = with_clock(|c| {
        let next = c.queue.next_due();
        let sweep = (c.workers > 1 && next.is_some()).then_some(c.next_sweep_ms);
        let soonest = now.saturating_add(c.min_window);
        (
            c.event,
            next.map(|n| sweep.map_or(n, |s| n.min(s)).max(soonest)),
        )
    });
    // SAFETY: the clock's event lives as long as the worker; only this thread touches it.
    unsafe {
        let Some(next) = next else {
            if (*event).timer_set() != 0 {
                nginx_sys::ngx_del_timer(event);
            }
            return;
        };
        // nginx orders timers by a signed difference: a delay past 2^63 - 1 ms would fire at
        // once.
        let delay = next.saturating_sub(now).clamp(1, MAX_MS);
        if (*event).timer_set() != 0 {
            if (*event).timer.key as u64 <= now.saturating_add(delay) {
                return;
            }
            nginx_sys::ngx_del_timer(event);
        }
        nginx_sys::ngx_add_timer(event, delay as _);
    }
}

/// Stops watching a peer for good (its resolved address left the upstream): an attempt in
/// progress is abandoned without a verdict, a kept connection closed, and the probe freed.
///
/// # Safety
/// `h` came from `start_probe` in this worker; not called from one of the probe's own handlers
/// (`shell::resolve` calls it from requests and its own timer).
pub unsafe fn retire(h: Handle) {
    let Some((watch, session)) = with_clock(|c| {
        c.queue
            .remove(h)
            .map(|watch| (watch, c.sessions.remove(&h)))
    }) else {
        return;
    };
    if !watch.probe.is_null() {
        // SAFETY: the probe is live (its watch held it) and none of its handlers runs.
        unsafe {
            abandon(&mut *watch.probe);
            free_probe(watch.probe);
        }
    }
    if let Some(s) = session {
        let session = s.replace(ptr::null_mut());
        if !session.is_null() {
            // SAFETY: the watch held the session's one reference.
            unsafe { nginx_sys::SSL_SESSION_free(session) };
        }
    }
}

/// At a worker's exit (the module's `exit_process`, before nginx unloads the module): closes
/// what the probes hold and frees every watch, probe, TLS session and the clock itself, so that
/// nothing is left only to the module's statics, which vanish with the module.
///
/// # Safety
/// In the exiting worker, from `exit_process`; nothing calls into the probes afterwards.
pub unsafe fn exit_process() {
    let Some((watches, sessions)) = CLOCK
        .0
        .borrow_mut()
        .as_mut()
        .map(|c| (c.queue.drain(), core::mem::take(&mut c.sessions)))
    else {
        return;
    };
    for w in watches {
        if !w.probe.is_null() {
            // SAFETY: the probe is live (its watch held it) and none of its handlers runs.
            unsafe {
                abandon(&mut *w.probe);
                free_probe(w.probe);
            }
        }
    }
    for s in sessions.into_values() {
        let session = s.replace(ptr::null_mut());
        if !session.is_null() {
            // SAFETY: the watch held the session's one reference.
            unsafe { nginx_sys::SSL_SESSION_free(session) };
        }
    }
    if let Some(clock) = CLOCK.0.borrow_mut().take() {
        // SAFETY: the clock's events are ours; out of nginx's timer tree and posted queue
        // before they are freed.
        unsafe {
            if (*clock.event).timer_set() != 0 {
                nginx_sys::ngx_del_timer(clock.event);
            }
            if (*clock.reaper).posted() != 0 {
                nginx_sys::ngx_delete_posted_event(clock.reaper);
            }
            drop(Box::from_raw(clock.event));
            drop(Box::from_raw(clock.reaper));
        }
    }
}

/// Frees a probe that has no connection.
///
/// # Safety
/// `p` came from `new_probe`, has no connection or pool, and is not used afterwards.
unsafe fn free_probe(p: *mut Probe) {
    // SAFETY: the probe owns the boxes it points to; nothing else refers to them once its
    // connection is closed.
    unsafe {
        let probe = Box::from_raw(p);
        drop(Box::from_raw(probe.addr));
        drop(Box::from_raw(probe.name));
        drop(Box::from_raw(probe.log));
    }
}

/// A new probe for `w`, as a raw pointer: the same pointer its connections carry, from which
/// every handler derives its access.
///
/// # Safety
/// `w`'s upstream and setup outlive the probe; in a worker.
unsafe fn new_probe(w: &Watch, id: Id, session: Option<Session>) -> *mut Probe {
    // SAFETY: zeroed nginx structs are their documented initial state; the cycle log is live;
    // the watch's address and strings are alive (the configuration's, or its own).
    unsafe {
        let setup = &*w.setup();
        let mut addr = [0u64; 16];
        let len = (w.addr.socklen() as usize).min(core::mem::size_of_val(&addr));
        ptr::copy_nonoverlapping(
            w.addr.sockaddr() as *const u8,
            addr.as_mut_ptr() as *mut u8,
            len,
        );
        if let Some(port) = setup.conf.port {
            set_port(addr.as_mut_ptr() as *mut u8, port);
        }
        let address = String::from_utf8_lossy(bytes(w.addr.name())).into_owned();
        let server = String::from_utf8_lossy(bytes(w.addr.server())).into_owned();
        let identity = if setup.conf.verify {
            setup.conf.verify_identity(&server, &address)
        } else {
            None
        };
        let log = Box::into_raw(Box::new(*(*nginx_sys::ngx_cycle).log));
        (*log).log_level = NGX_LOG_ALERT as _;
        let probe = Box::into_raw(Box::new(Probe {
            this: ptr::null_mut(),
            id,
            upstream: w.upstream,
            shared: w.shared,
            _addr: w.addr.clone(),
            setup,
            addr: Box::into_raw(Box::new(addr)),
            socklen: w.addr.socklen(),
            name: Box::into_raw(Box::new(*w.addr.name())),
            request: setup.conf.request(&address),
            sni: setup
                .conf
                .sni_name(&server)
                .and_then(|n| CString::new(n).ok()),
            verify_name: match &identity {
                Some(Identity::Name(n)) => CString::new(n.as_str()).ok(),
                _ => None,
            },
            verify_ip: match &identity {
                Some(Identity::Ip(ip)) => CString::new(ip.as_str()).ok(),
                _ => None,
            },
            log,
            stage: Stage::Idle,
            pc: core::mem::zeroed(),
            conn: ptr::null_mut(),
            pool: ptr::null_mut(),
            sent: 0,
            buf: Vec::new(),
            parser: Parser::default(),
            deadline: 0,
            reused: false,
            reusable: false,
            parked: false,
            session,
            connected_at: 0,
        }));
        (*probe).this = probe;
        probe
    }
}

/// How early a peer with this interval may be handled: up to `COALESCE_MS`, at most a tenth of
/// its interval (so that an early probe never shortens an interval noticeably).
fn window(interval: u64) -> u64 {
    COALESCE_MS.min(interval / 10)
}

/// The queue's key for a peer to be handled at `at`: its window earlier, and always after
/// `now`, so that no peer comes up twice in one wake-up.
fn key_for(at: u64, interval: u64, now: u64) -> u64 {
    at.saturating_sub(window(interval))
        .max(now.saturating_add(1))
}

/// The clock: handles the peers that are due (in batches), then sleeps until the next one.
unsafe extern "C" fn on_clock(ev: *mut ngx_event_t) {
    if exiting() {
        // An exiting worker starts no new probe (and the timer, cancelable, holds nothing up).
        return;
    }
    let now = now_ms();
    let mut handled = 0;
    while handled < BATCH {
        let Some(id) = with_clock(|c| c.queue.pop_due(now)) else {
            break;
        };
        if let Some((at, interval)) = visit(id, now) {
            with_clock(|c| c.queue.reschedule(id, key_for(at, interval, now)));
        }
        handled += 1;
    }
    if handled == BATCH {
        // More may be due: go on after the requests waiting in this turn.
        // SAFETY: the clock's own event.
        unsafe { nginx_sys::ngx_add_timer(ev, 1) };
        return;
    }
    adopt_orphans(now);
    arm_clock(now);
}

/// How often a worker looks for peers that their home worker stopped probing.
const SWEEP_MS: u64 = 2000;

/// Every `SWEEP_MS`, with several workers: adopts the checked peers of other workers whose
/// lease is overdue by two intervals and the longest grace (their home worker died and was not
/// replaced, or is stalled), once this worker has run that long itself. An adopted peer is
/// watched here too from then on; the lease still gives each probe to one worker.
fn adopt_orphans(now: u64) {
    let (due, started, workers) = with_clock(|c| (c.next_sweep_ms, c.started_ms, c.workers));
    if workers <= 1 || now < due {
        return;
    }
    with_clock(|c| c.next_sweep_ms = now.saturating_add(SWEEP_MS));
    // SAFETY: this worker's cycle and configuration; upstreams live as long as the cycle, and
    // the records are mapped for the process.
    unsafe {
        let main = crate::shell::conf::cycle_main_conf(nginx_sys::ngx_cycle as *mut ngx_cycle_t);
        if main.is_null() {
            return;
        }
        for &u in &(*main).upstreams {
            let Some(setup) = (*u).check.as_deref() else {
                continue;
            };
            let interval = setup.conf.interval_ms;
            let overdue = interval
                .saturating_mul(2)
                .saturating_add(schedule::MAX_GRACE_MS);
            if now < started.saturating_add(overdue) {
                continue;
            }
            let orphans: Vec<usize> = (*u)
                .current()
                .peers
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    let s = &*p.shared;
                    !p.down
                        && p.record().is_some()
                        && s.admin() != crate::api::Admin::Down.code()
                        && s.lease().0.saturating_add(overdue) < now
                })
                .map(|(i, _)| i)
                .collect();
            for i in orphans {
                let peer = &(*u).current().peers[i];
                let key = peer.key;
                let watched = if (*u).dynamic.is_some() {
                    (*u).dynamic
                        .as_ref()
                        .is_some_and(|d| d.probes.get(&key).is_some_and(Option::is_some))
                } else {
                    with_clock(|c| {
                        c.adopted.contains(&key) || due::home(peer.record(), c.workers, c.worker)
                    })
                };
                if watched {
                    continue;
                }
                let h = watch(u, peer, setup, true);
                if let Some(d) = (*u).dynamic.as_deref_mut() {
                    d.probes.insert(key, h);
                } else {
                    with_clock(|c| c.adopted.insert(key));
                }
                ngx::ngx_log_error!(
                    nginx_sys::NGX_LOG_NOTICE,
                    (*nginx_sys::ngx_cycle).log,
                    "lb: peer {} in {}upstream \"{}\" was due for a check {} ms ago: this \
                     worker takes its checks over",
                    bytes(peer.name()).escape_ascii(),
                    (*u).kind.prefix(),
                    bytes(&(*u).name).escape_ascii(),
                    now.saturating_sub((*peer.shared).lease().0)
                );
            }
        }
    }
}

/// One due peer: takes its lease and starts a probe when this worker may; returns when the peer
/// should be handled next (an absolute time) and its interval. `None`: the watch is gone.
fn visit(id: Id, now: u64) -> Option<(u64, u64)> {
    let (shared, setup, probe) =
        with_clock(|c| c.queue.get(id).map(|w| (w.shared, w.setup(), w.probe)))?;
    // SAFETY: the record is mapped for the process; the setup lives as long as the
    // configuration; the probe, when there is one, is live (its watch holds it).
    let (shared, setup) = unsafe { (&*shared, &*setup) };
    let interval = setup.conf.interval_ms;
    // SAFETY: as above.
    if !probe.is_null() && unsafe { (*probe).stage } != Stage::Idle {
        // The attempt's deadline and this time can come in the same turn (timeout ==
        // interval, no jitter); never overlap attempts: skip this interval.
        return Some((now.saturating_add(interval), interval));
    }
    if shared.admin() == crate::api::Admin::Down.code() {
        // Taken down by an operator (`lb_api`): checks stop until it is set up again.
        return Some((now.saturating_add(interval), interval));
    }
    // A peer due within its window counts as due now.
    let soon = now.saturating_add(window(interval));
    let pid = crate::shell::nginx::pid();
    let (due, last_prober) = lease(shared, &setup.conf, now);
    let grace = schedule::grace_ms(keeps_connections(setup), last_prober == pid, interval);
    if let Some(wait) = schedule::wait_before_lease(soon, due, grace) {
        return Some((soon.saturating_add(wait), interval));
    }
    // The next due time counts from the due time when the lease is taken a little early, so
    // that the interval stays what it is.
    let jitter = with_clock(|c| c.random(setup.conf.jitter_ms + 1));
    let next = schedule::next_due(now.max(due), interval, jitter);
    if !shared.take_lease(soon, next, pid) {
        let wait = schedule::wait_after_lost_lease(now, shared.lease().0, grace);
        return Some((now.saturating_add(wait), interval));
    }
    let probe = if probe.is_null() {
        with_clock(|c| {
            let session = c.sessions.get(&id).cloned();
            c.queue.get_mut(id).map(|w| {
                // SAFETY: in a worker; the watch's pointers outlive the probe.
                w.probe = unsafe { new_probe(w, id, session) };
                w.probe
            })
        })?
    } else {
        probe
    };
    // SAFETY: the probe is live and idle: no handler of it runs.
    start(unsafe { &mut *probe }, now);
    Some((next, interval))
}

/// The probe's attempt ended without keeping a connection: its memory is given back once the
/// handler that ended it has returned.
fn reap_later(p: &Probe) {
    let id = p.id;
    let reaper = with_clock(|c| {
        c.reap.push(id);
        c.reaper
    });
    // SAFETY: the reaper is this worker's own event, posted to the event loop.
    unsafe {
        if (*reaper).posted() == 0 {
            nginx_sys::ngx_post_event(reaper, ptr::addr_of_mut!(nginx_sys::ngx_posted_events));
        }
    }
}

/// Frees the probes of attempts that ended, unless one started again or keeps a connection.
unsafe extern "C" fn on_reap(_ev: *mut ngx_event_t) {
    let ids = with_clock(|c| core::mem::take(&mut c.reap));
    for id in ids {
        let probe = with_clock(|c| {
            let w = c.queue.get_mut(id)?;
            let p = w.probe;
            // SAFETY: a probe its watch holds is live; no handler of it runs now.
            let idle = !p.is_null()
                && unsafe { (*p).stage == Stage::Idle && (*p).conn.is_null() && !(*p).parked };
            if idle {
                w.probe = ptr::null_mut();
                Some(p)
            } else {
                None
            }
        });
        if let Some(p) = probe {
            // SAFETY: idle, without connection, and no longer held by its watch.
            unsafe { free_probe(p) };
        }
    }
}

/// The cycle's log, for the probes' `debug` lines (a probe belongs to no request).
fn cycle_log() -> *mut ngx_log_t {
    // SAFETY: a worker always has its cycle.
    unsafe { (*nginx_sys::ngx_cycle).log }
}

/// Starts one probe attempt: on the kept connection if there is one, else on a new one.
fn start(p: &mut Probe, now: u64) {
    lb_debug!(
        cycle_log(),
        "lb: probe of peer {} in {}upstream \"{}\" started ({}, {})",
        // SAFETY: the probe's name lives as long as the probe.
        bytes(unsafe { &*p.name }).escape_ascii(),
        p.upstream().kind.prefix(),
        bytes(&p.upstream().name).escape_ascii(),
        match p.setup().conf.kind {
            Kind::Tcp => "type=tcp",
            Kind::Http => "type=http",
            Kind::Https => "type=https",
            Kind::Udp => "type=udp",
            Kind::Tls => "type=tls",
        },
        if p.conn.is_null() {
            "new connection"
        } else {
            "kept connection"
        }
    );
    p.deadline = now.saturating_add(p.setup().conf.timeout_ms);
    p.sent = 0;
    p.buf.clear();
    p.parser = Parser::default();
    p.reusable = false;
    if p.conn.is_null() {
        return connect(p);
    }
    // A kept connection: not once it is older than keepalive_time (60 s by default: so that
    // NAT or a firewall forgetting an idle connection costs no false failure, and with
    // verify=on the certificate is verified again in a full handshake), nor if the peer has
    // sent something or closed it and that event is not handled yet.
    let age = now.saturating_sub(p.connected_at);
    if age > p.setup().conf.keepalive_time_ms || !quiet(p.conn) {
        close_attempt(p);
        return connect(p);
    }
    unpark(p);
    let c = p.conn;
    // SAFETY: `c` is our kept connection (closed and nulled by `on_idle` when the peer or nginx
    // closes it); its events come back to the probe before it is used.
    unsafe {
        (*(*c).read).handler = Some(on_event);
        (*(*c).write).handler = Some(on_event);
    }
    p.reused = true;
    p.stage = Stage::Sending;
    send(p)
}

/// Ends the attempt without a verdict: for failures of this worker (out of connections or
/// memory, an event-registration error, the worker shutting down), which say nothing about the
/// peer and must not count as failed checks in shared memory.
fn abandon(p: &mut Probe) {
    close_attempt(p);
}

/// Ends the attempt: keeps the connection for the next probe when it can carry one (else
/// closes it and frees its pool), records the result and logs a change of state once.
fn finish(p: &mut Probe, reason: Reason) {
    if p.reusable && p.keepalive() && !exiting() {
        p.reusable = false;
        park(p);
    } else {
        close_attempt(p);
    }
    let conf = &p.setup().conf;
    let (rise, fall) = (conf.rise, conf.fall);
    let transition = p.shared().on_check(reason, rise, fall, wall_ms());
    let health = p.shared().health();
    lb_debug!(
        cycle_log(),
        "lb: probe of peer {} in {}upstream \"{}\" judged: {}; peer {}, {} pass(es), {} \
         failure(s) in a row (rise={rise}, fall={fall}){}",
        // SAFETY: as in `start`.
        bytes(unsafe { &*p.name }).escape_ascii(),
        p.upstream().kind.prefix(),
        bytes(&p.upstream().name).escape_ascii(),
        reason,
        if health.up() { "up" } else { "down" },
        health.passes(),
        health.fails(),
        match transition {
            Some(Transition::WentDown) => ", went down",
            Some(Transition::WentUp) => ", went up",
            None => "",
        }
    );
    if transition == Some(Transition::WentUp) && p.shared().counters().unhealthy > 0 {
        // Back after being down (not the first result at a start): `lb_slow_start` ramps it.
        p.shared().start_ramp(crate::shell::nginx::now_ms());
        p.upstream().ramp_started();
    }
    if let Some(t) = transition {
        let u = p.upstream();
        // SAFETY: names are nginx strings of the configuration; the cycle log is live.
        unsafe {
            let log = nginx_sys::ngx_cycle
                .as_ref()
                .map_or(ptr::null_mut(), |c| c.log);
            if log.is_null() {
                return;
            }
            let change = match t {
                Transition::WentDown => format!("down after {fall} failed check(s): {reason}"),
                Transition::WentUp => format!("up after {rise} passed check(s)"),
            };
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                log,
                "lb: peer {} in {}upstream \"{}\" is {}",
                bytes(&*p.name).escape_ascii(),
                u.kind.prefix(),
                bytes(&u.name).escape_ascii(),
                change
            );
        }
    }
}
