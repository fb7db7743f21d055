//! Where a probe is sent: each worker keeps one `Probe` per checked peer, driven by nginx timers
//! and connection events on the worker's own event loop — no thread, no blocking call.
//!
//! Coordination: every worker arms a timer for every checked peer, but a probe runs only in the
//! worker that wins the peer's lease in shared memory (`PeerShared::take_lease`, a
//! compare-and-swap of the next due time), so each peer is probed once per interval in total.
//! A worker that dies mid-probe leaves nothing held: the next probe is due an interval later.
//!
//! One probe: connect (non-blocking, `ngx_event_connect_peer`) → for `https` a TLS handshake
//! (SNI, optional verification) → send the request → read at most 16 KiB and judge it. The
//! whole exchange must finish within `timeout`. Timers are cancelable, so they never hold up a
//! worker's graceful exit after a reload; an exiting worker starts no new probe.
//!
//! Keepalive (`keepalive=on`, the default for http/https): when the response allows it, the
//! connection stays open, idle, for the peer's next probe — no connect, no handshake per
//! interval. An idle connection is closed when the peer sends anything or closes it, when the
//! worker exits (it is marked idle for nginx), and instead of being reused once it is older
//! than `keepalive_time`. It is checked (nothing pending, not closed) just before it is reused;
//! a request that still finds it closed under it is sent again on a new connection, within
//! the same timeout.
//! A worker keeps at most a quarter of its `worker_connections` idle for probes. So that one
//! connection per peer suffices, the worker that ran the last probe takes the next lease at
//! once and the others only after a short grace period.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::ffi::CString;

use nginx_sys::{
    ngx_close_connection, ngx_connection_t, ngx_create_pool, ngx_cycle_t, ngx_destroy_pool,
    ngx_event_connect_peer, ngx_event_get_peer, ngx_event_t, ngx_handle_read_event,
    ngx_handle_write_event, ngx_int_t, ngx_log_t, ngx_peer_connection_t, ngx_pool_t,
    ngx_regex_exec, ngx_ssl_check_host, ngx_ssl_create_connection, ngx_ssl_handshake,
    ngx_ssl_shutdown, ngx_str_t, sockaddr, socklen_t, NGX_LOG_ALERT, NGX_LOG_WARN, NGX_SSL_BUFFER,
    NGX_SSL_CLIENT,
};

use super::check::CheckSetup;
use crate::conf::time::MAX_MS;
use crate::health::config::{HttpMethod, Identity, Kind, MAX_RESPONSE};
use crate::health::reason::Reason;
use crate::health::response::{Parser, Progress, ResponseError};
use crate::health::schedule;
use crate::health::state::Transition;
use crate::shell::nginx::{bytes, exiting, now_ms, peek, Peek, AGAIN, ERROR, OK};
use crate::shell::table::{OwnedAddr, Peer, Upstream};
use crate::shm::PeerShared;

mod conn;
mod http;
mod kinds;
mod pool;
mod tls;

use conn::*;
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

/// One peer's prober in this worker. Lives (at a fixed address) until the worker exits.
pub struct Probe {
    upstream: *const Upstream,
    /// The peer's record.
    shared: *const PeerShared,
    /// Keeps a resolved peer's address text (which `name` points to) alive.
    _owned: Option<std::rc::Rc<OwnedAddr>>,
    setup: *const CheckSetup,
    /// The schedule timer, in an allocation of its own: nginx's timer tree writes into its node
    /// whenever other timers come and go, which must not be memory a `&mut Probe` covers.
    timer: *mut ngx_event_t,
    /// The address probed (the peer's, with `port=` applied) and its text; separate
    /// allocations too, as nginx keeps pointers to them in the connection and reads them
    /// while a handler holds the probe.
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
    /// (In an allocation of its own, like the timer: nginx writes to a connection's log.)
    log: *mut ngx_log_t,
    rng: u64,
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
    /// The peer's last resumable TLS session (an OpenSSL `SSL_SESSION` holding one reference),
    /// offered on the next new connection (with `keepalive=off`, or after a kept connection
    /// was closed).
    tls_session: *mut nginx_sys::SSL_SESSION,
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
        let conf = &self.setup().conf;
        conf.keepalive && conf.kind.is_http()
    }
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

/// Arms a probe timer for every checked peer of this worker (from the module's
/// `init_process`).
///
/// # Safety
/// Called in a new worker with its cycle.
pub unsafe fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: reading nginx's process type and the cycle's http configuration, which the
    // worker inherited; probes are leaked on purpose (they live as long as the worker).
    unsafe {
        if !crate::shell::nginx::serves_requests() {
            return OK;
        }
        let main = crate::shell::conf::cycle_main_conf(cycle);
        if main.is_null() {
            return OK;
        }
        for &u in &(*main).upstreams {
            let Some(setup) = (*u).check.as_deref() else {
                continue;
            };
            if (*u).dynamic.is_some() {
                // Started by `shell::resolve::worker_start`, which follows the peers.
                continue;
            }
            let peers: Vec<Peer> = (*u).current().peers.clone();
            for peer in &peers {
                if peer.down {
                    continue;
                }
                start_probe(cycle, u, peer, setup);
            }
        }
    }
    OK
}

/// Makes a probe for `peer` and arms its first timer: a peer whose record says nothing is due
/// yet (new) is probed at once, spread over a quarter interval. The probe lives as long as the
/// worker, or until `retire` (its resolved address left).
///
/// # Safety
/// In a worker: `cycle` is its cycle; `u` and `setup` outlive the probe; `peer` has its record.
pub unsafe fn start_probe(
    cycle: *mut ngx_cycle_t,
    u: *const Upstream,
    peer: &Peer,
    setup: &CheckSetup,
) -> *mut Probe {
    // SAFETY: as required by the caller.
    unsafe {
        let pid = u64::from(crate::shell::nginx::pid());
        let now = now_ms();
        let probe = new_probe(cycle, u, peer, setup, pid ^ (peer.record as u64) << 32);
        let (due, _) = (*probe).shared().lease();
        let delay = if due > now {
            due - now
        } else {
            (*probe).random(setup.conf.interval_ms / 4 + 1)
        };
        nginx_sys::ngx_add_timer((*probe).timer, delay.max(1) as _);
        probe
    }
}

/// Stops a probe for good (its resolved address left the upstream): an attempt in progress is
/// abandoned without a verdict, a kept connection closed, the timer cancelled, and the probe
/// freed.
///
/// # Safety
/// `p` came from `start_probe` in this worker and is not used afterwards; not called from one
/// of the probe's own handlers (`shell::resolve` calls it from requests and its own timer).
pub unsafe fn retire(p: *mut Probe) {
    // SAFETY: every event that could reach the probe (its connection's and its timer) is
    // removed before the memory is freed; the probe owns the boxes it points to.
    unsafe {
        abandon(&mut *p);
        let timer = (*p).timer;
        if (*timer).timer_set() != 0 {
            nginx_sys::ngx_del_timer(timer);
        }
        if !(*p).tls_session.is_null() {
            nginx_sys::SSL_SESSION_free((*p).tls_session);
        }
        let probe = Box::from_raw(p);
        drop(Box::from_raw(probe.timer));
        drop(Box::from_raw(probe.addr));
        drop(Box::from_raw(probe.name));
        drop(Box::from_raw(probe.log));
    }
}

/// A new probe, as a raw pointer: the same pointer its timer carries, from which every
/// handler derives its access.
///
/// # Safety
/// `u` and `setup` must outlive the probe; `cycle` is the worker's cycle.
unsafe fn new_probe(
    cycle: *mut ngx_cycle_t,
    u: *const Upstream,
    peer: &Peer,
    setup: &CheckSetup,
    seed: u64,
) -> *mut Probe {
    // SAFETY: zeroed nginx structs are their documented initial state; the cycle log is live.
    unsafe {
        let mut addr = [0u64; 16];
        let len = (peer.socklen as usize).min(core::mem::size_of_val(&addr));
        ptr::copy_nonoverlapping(
            peer.sockaddr as *const u8,
            addr.as_mut_ptr() as *mut u8,
            len,
        );
        if let Some(port) = setup.conf.port {
            set_port(addr.as_mut_ptr() as *mut u8, port);
        }
        let address = String::from_utf8_lossy(bytes(&peer.name)).into_owned();
        let server = String::from_utf8_lossy(bytes(&peer.server)).into_owned();
        let identity = if setup.conf.verify {
            setup.conf.verify_identity(&server, &address)
        } else {
            None
        };
        let log = Box::into_raw(Box::new(*(*cycle).log));
        (*log).log_level = NGX_LOG_ALERT as _;
        let probe = Box::into_raw(Box::new(Probe {
            upstream: u,
            shared: peer.shared,
            _owned: peer.owned.clone(),
            setup,
            timer: Box::into_raw(Box::new(core::mem::zeroed())),
            addr: Box::into_raw(Box::new(addr)),
            socklen: peer.socklen,
            name: Box::into_raw(Box::new(peer.name)),
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
            rng: seed | 1,
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
            tls_session: ptr::null_mut(),
            connected_at: 0,
        }));
        let timer = (*probe).timer;
        (*timer).handler = Some(on_timer);
        (*timer).data = probe as *mut c_void;
        (*timer).log = (*cycle).log;
        (*timer).set_cancelable(1);
        probe
    }
}

unsafe extern "C" fn on_timer(ev: *mut ngx_event_t) {
    // SAFETY: `data` is the probe this timer belongs to (set in `new_probe`).
    let p = unsafe { &mut *((*ev).data as *mut Probe) };
    if exiting() {
        return;
    }
    let interval = p.setup().conf.interval_ms;
    let now = now_ms();
    if p.stage != Stage::Idle {
        // The attempt's deadline and this timer can expire in the same turn (timeout ==
        // interval, no jitter); never overlap attempts: skip this interval.
        // SAFETY: re-arming our own timer.
        unsafe { nginx_sys::ngx_add_timer(ev, interval as _) };
        return;
    }
    if p.shared().admin() == crate::api::Admin::Down.code() {
        // Taken down by an operator (`lb_api`): checks stop until it is set up again.
        // SAFETY: re-arming our own timer.
        unsafe { nginx_sys::ngx_add_timer(ev, interval as _) };
        return;
    }
    let jitter = p.random(p.setup().conf.jitter_ms + 1);
    let next = schedule::next_due(now, interval, jitter);
    let pid = crate::shell::nginx::pid();
    let shared = p.shared();
    let (due, last_prober) = shared.lease();
    let grace = schedule::grace_ms(p.keepalive(), last_prober == pid, interval);
    let delay = if let Some(wait) = schedule::wait_before_lease(now, due, grace) {
        wait
    } else if shared.take_lease(now, next, pid) {
        start(p, now);
        next - now
    } else {
        schedule::wait_after_lost_lease(now, shared.lease().0, grace)
    };
    // nginx orders timers by a signed difference: a delay past 2^63 - 1 ms would fire at once.
    // SAFETY: re-arming our own timer (the probe may have finished synchronously; the timer is
    // independent of the connection).
    unsafe { nginx_sys::ngx_add_timer(ev, delay.min(MAX_MS) as _) };
}

/// Starts one probe attempt: on the kept connection if there is one, else on a new one.
fn start(p: &mut Probe, now: u64) {
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
    if transition == Some(Transition::WentUp) && p.shared().counters().unhealthy > 0 {
        // Back after being down (not the first result at a start): `lb_slow_start` ramps it.
        p.shared().start_ramp(crate::shell::nginx::now_ms());
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
                "lb: peer {} in upstream \"{}\" is {}",
                bytes(&*p.name).escape_ascii(),
                bytes(&u.name).escape_ascii(),
                change
            );
        }
    }
}
