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
    ngx_handle_write_event, ngx_http_conf_ctx_t, ngx_http_module, ngx_int_t, ngx_log_t,
    ngx_peer_connection_t, ngx_pool_t, ngx_regex_exec, ngx_ssl_check_host,
    ngx_ssl_create_connection, ngx_ssl_handshake, ngx_ssl_shutdown, ngx_str_t, sockaddr, socklen_t,
    NGX_LOG_ALERT, NGX_LOG_WARN, NGX_SSL_BUFFER, NGX_SSL_CLIENT,
};

use super::config::{HttpMethod, Identity, Kind, MAX_RESPONSE};
use super::directive::CheckSetup;
use super::reason::Reason;
use super::response::{Parser, Progress, ResponseError};
use super::state::Transition;
use crate::conf::time::MAX_MS;
use crate::nginx::{bytes, peek, Peek};
use crate::shm::PeerShared;
use crate::upstream::directive::MainConf;
use crate::upstream::table::Upstream;

/// Connections this worker keeps idle for probes (a worker is one thread: the atomic is only
/// for safe shared access).
static KEPT: AtomicUsize = AtomicUsize::new(0);

const OK: ngx_int_t = nginx_sys::NGX_OK as ngx_int_t;
const AGAIN: ngx_int_t = nginx_sys::NGX_AGAIN as ngx_int_t;
const ERROR: ngx_int_t = nginx_sys::NGX_ERROR as ngx_int_t;

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
    peer: usize,
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

fn now_ms() -> u64 {
    // SAFETY: nginx updates its cached clock in this (the only) thread.
    unsafe { ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_current_msec)) as u64 }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn exiting() -> bool {
    // SAFETY: plain reads of nginx's process flags, set by its signal handling in this process.
    unsafe {
        ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_exiting)) != 0
            || ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_quit)) != 0
            || ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_terminate)) != 0
    }
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
        // SAFETY: records are set before workers start (see `shm::zone`).
        unsafe { &*self.upstream().peers[self.peer].shared }
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

/// Our main conf in `cycle`, or null when there is no `http` block.
///
/// # Safety
/// `cycle` must be a live cycle.
pub unsafe fn main_conf(cycle: *mut ngx_cycle_t) -> *mut MainConf {
    // SAFETY: the http module's slot of `conf_ctx` holds the http configuration context.
    unsafe {
        let http = *(*cycle)
            .conf_ctx
            .add((*ptr::addr_of!(ngx_http_module)).index)
            as *mut ngx_http_conf_ctx_t;
        if http.is_null() {
            return ptr::null_mut();
        }
        *(*http)
            .main_conf
            .add(crate::upstream::directive::ctx_index()) as *mut MainConf
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
        let kind = ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_process)) as u32;
        if kind != nginx_sys::NGX_PROCESS_WORKER && kind != nginx_sys::NGX_PROCESS_SINGLE {
            return OK;
        }
        let main = main_conf(cycle);
        if main.is_null() {
            return OK;
        }
        let pid = ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_pid)) as u64;
        let now = now_ms();
        for &u in &(*main).upstreams {
            let Some(setup) = (*u).check.as_deref() else {
                continue;
            };
            for (i, peer) in (*u).peers.iter().enumerate() {
                if peer.down {
                    continue;
                }
                // Every later access goes through this one pointer (the timer's `data`).
                let probe = new_probe(cycle, u, i, setup, pid ^ (i as u64) << 32);
                let due = (*probe).shared().next_check_ms.load(Relaxed);
                // A new peer is due at once; spread the first probes over a quarter interval.
                let delay = if due > now {
                    due - now
                } else {
                    (*probe).random(setup.conf.interval_ms / 4 + 1)
                };
                nginx_sys::ngx_add_timer((*probe).timer, delay.max(1) as _);
            }
        }
    }
    OK
}

/// A new probe, leaked on purpose (it lives as long as the worker), as a raw pointer: the
/// same pointer its timer carries, from which every handler derives its access.
///
/// # Safety
/// `u` and `setup` must outlive the probe; `cycle` is the worker's cycle.
unsafe fn new_probe(
    cycle: *mut ngx_cycle_t,
    u: *const Upstream,
    i: usize,
    setup: &CheckSetup,
    seed: u64,
) -> *mut Probe {
    // SAFETY: zeroed nginx structs are their documented initial state; the cycle log is live.
    unsafe {
        let peer = &(&(*u).peers)[i];
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
            peer: i,
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

/// Sets the port of an IPv4 or IPv6 socket address (same offset in both).
///
/// # Safety
/// `sa` must point to a socket address of at least 4 bytes.
unsafe fn set_port(sa: *mut u8, port: u16) {
    // SAFETY: the family is the first two bytes, the port the next two, for AF_INET and AF_INET6.
    unsafe {
        let family = ptr::read_unaligned(sa as *const u16);
        if i32::from(family) == libc::AF_INET || i32::from(family) == libc::AF_INET6 {
            ptr::write_unaligned(sa.add(2) as *mut u16, port.to_be());
        }
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
    let jitter = p.random(p.setup().conf.jitter_ms + 1);
    // Times from the configuration reach 2^63 - 1 ms: sums saturate rather than wrap.
    let next = now.saturating_add(interval).saturating_add(jitter);
    // SAFETY: reading nginx's pid.
    let pid = unsafe { ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_pid)) } as u32;
    let shared = p.shared();
    // With keepalive, the last prober (which holds the connection) goes first; the others
    // step in only if it has not moved the lease on within the grace period (it died, exited
    // or is stalled).
    let grace = if p.keepalive() && shared.prober_pid.load(Relaxed) != pid {
        (interval / 4).min(250)
    } else {
        0
    };
    let due = shared.next_check_ms.load(Relaxed);
    let delay = if now < due.saturating_add(grace) {
        due.saturating_add(grace) - now
    } else if shared.take_lease(now, next, pid) {
        start(p, now);
        next - now
    } else {
        let due = shared.next_check_ms.load(Relaxed);
        due.saturating_add(grace).saturating_sub(now).max(1)
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

/// A kept connection failed before any byte of the answer: the peer most likely closed it while
/// idle (keepalive timeout or request limit) just as we sent. Not the peer's answer: try again
/// on a new connection, within the same deadline. Returns false when the failure stands.
fn retry_fresh(p: &mut Probe) -> bool {
    if !p.reused || !p.buf.is_empty() || now_ms() >= p.deadline {
        return false;
    }
    close_attempt(p);
    p.sent = 0;
    connect(p);
    true
}

/// Opens a new connection for the attempt.
fn connect(p: &mut Probe) {
    p.reused = false;
    p.connected_at = now_ms();
    // SAFETY: the pool and the peer connection are ours for the attempt; `ngx_event_connect_peer`
    // fills in `pc.connection` or closes what it opened.
    unsafe {
        // Only TLS needs a pool (nginx allocates its connection state from it).
        if p.setup().conf.kind == Kind::Https {
            p.pool = ngx_create_pool(4096, p.log);
            if p.pool.is_null() {
                return abandon(p);
            }
        }
        p.pc = core::mem::zeroed();
        p.pc.sockaddr = p.addr as *mut sockaddr;
        p.pc.socklen = p.socklen;
        p.pc.name = p.name;
        p.pc.get = Some(ngx_event_get_peer);
        p.pc.log = p.log;
        p.pc.set_log_error(nginx_sys::ngx_connection_log_error_e_NGX_ERROR_ERR as _);
        p.stage = Stage::Connecting;
        let rc = ngx_event_connect_peer(&mut p.pc);
        if rc == nginx_sys::NGX_DECLINED as ngx_int_t {
            // connect() itself failed: that is the peer's answer.
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as u32;
            p.pc.connection = ptr::null_mut();
            return finish(p, Reason::ConnectFailed(errno));
        }
        if rc == ERROR || rc == nginx_sys::NGX_BUSY as ngx_int_t {
            // No socket, no free connection, no event registration: this worker's problem.
            p.pc.connection = ptr::null_mut();
            return abandon(p);
        }
        let c = p.pc.connection;
        p.conn = c;
        // The probe's root pointer (the one the timer carries), not one derived from `p`,
        // which ends with this call.
        (*c).data = (*p.timer).data;
        (*c).pool = p.pool;
        (*c).log = p.log;
        (*(*c).read).log = p.log;
        (*(*c).write).log = p.log;
        (*(*c).read).handler = Some(on_event);
        (*(*c).write).handler = Some(on_event);
        if rc == AGAIN {
            arm(p, (*c).write);
            return;
        }
        connected(p);
    }
}

/// Sets `ev`'s timer to the time left before the probe's deadline.
///
/// # Safety
/// `ev` must be an event of the probe's live connection.
unsafe fn arm(p: &Probe, ev: *mut ngx_event_t) {
    let left = p.deadline.saturating_sub(now_ms()).max(1);
    // SAFETY: guaranteed by the caller.
    unsafe { nginx_sys::ngx_add_timer(ev, left as _) };
}

unsafe extern "C" fn on_event(ev: *mut ngx_event_t) {
    // SAFETY: connection events carry the connection; its `data` is our probe.
    let (c, p) = unsafe {
        let c = (*ev).data as *mut ngx_connection_t;
        (c, &mut *((*c).data as *mut Probe))
    };
    // SAFETY: `c` is live while its events are.
    if unsafe { (*c).close() } != 0 {
        // worker_shutdown_timeout closes everything: no verdict.
        return abandon(p);
    }
    // SAFETY: `ev` is live while the connection is.
    if unsafe { (*ev).timedout() } != 0 {
        return finish(p, Reason::Timeout);
    }
    match p.stage {
        Stage::Connecting => {
            let err = socket_error(p.conn);
            if err != 0 {
                return finish(p, Reason::ConnectFailed(err));
            }
            connected(p)
        }
        Stage::Sending => send(p),
        Stage::Reading => read(p),
        Stage::Handshaking | Stage::Idle => {}
    }
}

/// The pending error of a non-blocking connect (`SO_ERROR`).
fn socket_error(c: *mut ngx_connection_t) -> u32 {
    let mut err: i32 = 0;
    let mut len = core::mem::size_of::<i32>() as socklen_t;
    // SAFETY: `c->fd` is an open socket; `err`/`len` are valid for writing.
    let rc = unsafe {
        nginx_sys::getsockopt(
            (*c).fd,
            nginx_sys::SOL_SOCKET as _,
            nginx_sys::SO_ERROR as _,
            &mut err as *mut i32 as *mut c_void,
            &mut len,
        )
    };
    if rc == -1 {
        return std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as u32;
    }
    err as u32
}

fn connected(p: &mut Probe) {
    let kind = p.setup().conf.kind;
    match kind {
        Kind::Tcp => finish(p, Reason::Passed),
        Kind::Http => {
            p.stage = Stage::Sending;
            send(p)
        }
        Kind::Https => handshake(p),
    }
}

fn handshake(p: &mut Probe) {
    let c = p.conn;
    // SAFETY: the TLS context was created at configuration time; `c` is our live connection.
    unsafe {
        if (*c).write.as_ref().is_some_and(|w| w.timer_set() != 0) {
            nginx_sys::ngx_del_timer((*c).write);
        }
        if ngx_ssl_create_connection(p.setup().ssl, c, (NGX_SSL_BUFFER | NGX_SSL_CLIENT) as _) != OK
        {
            // Out of memory in this worker: says nothing about the peer.
            return abandon(p);
        }
        if let Some(name) = &p.sni {
            // SSL_set_tlsext_host_name(ssl, name) is a macro over SSL_ctrl.
            nginx_sys::SSL_ctrl(
                (*(*c).ssl).connection,
                nginx_sys::SSL_CTRL_SET_TLSEXT_HOSTNAME as _,
                nginx_sys::TLSEXT_NAMETYPE_host_name as _,
                name.as_ptr() as *mut c_void,
            );
        }
        // Resume the peer's last session (an abbreviated handshake), if there is one.
        if !p.tls_session.is_null() && nginx_sys::ngx_ssl_set_session(c, p.tls_session) != OK {
            // Not resumable after all: a full handshake, and no second try with it.
            nginx_sys::SSL_SESSION_free(core::mem::replace(&mut p.tls_session, ptr::null_mut()));
        }
        if let Some(ip) = &p.verify_ip {
            // No name to check: the chain verification also checks that the certificate names
            // the address (an IP subjectAltName); a mismatch is X509_V_ERR_IP_ADDRESS_MISMATCH.
            let param = nginx_sys::SSL_get0_param((*(*c).ssl).connection);
            if nginx_sys::X509_VERIFY_PARAM_set1_ip_asc(param, ip.as_ptr()) != 1 {
                return abandon(p);
            }
        }
        p.stage = Stage::Handshaking;
        let rc = ngx_ssl_handshake(c);
        if rc == AGAIN {
            (*(*c).ssl).handler = Some(handshake_done);
            arm(p, (*c).read);
            return;
        }
        after_handshake(p);
    }
}

/// nginx's TLS code calls this when the handshake ends (or times out, or the worker closes
/// connections).
unsafe extern "C" fn handshake_done(c: *mut ngx_connection_t) {
    // SAFETY: called with our connection, whose `data` is our probe.
    unsafe { after_handshake(&mut *((*c).data as *mut Probe)) }
}

fn after_handshake(p: &mut Probe) {
    let c = p.conn;
    // SAFETY: `c` is our live connection with a TLS object.
    unsafe {
        if (*c).close() != 0 {
            return abandon(p);
        }
        if (*(*c).read).timedout() != 0 || (*(*c).write).timedout() != 0 {
            return finish(p, Reason::Timeout);
        }
        if (*(*c).ssl).handshaked() == 0 {
            return finish(p, Reason::TlsHandshake);
        }
        if p.setup().conf.verify {
            let v = nginx_sys::SSL_get_verify_result((*(*c).ssl).connection);
            if v != 0 {
                return finish(p, Reason::TlsVerify(v as u32));
            }
            if let Some(name) = &p.verify_name {
                let mut s = ngx_str_t {
                    len: name.as_bytes().len(),
                    data: name.as_ptr() as *mut u8,
                };
                if ngx_ssl_check_host(c, &mut s) != OK {
                    // X509_V_ERR_HOSTNAME_MISMATCH
                    return finish(p, Reason::TlsVerify(62));
                }
            }
        }
        if (*(*c).read).timer_set() != 0 {
            nginx_sys::ngx_del_timer((*c).read);
        }
        (*(*c).read).handler = Some(on_event);
        (*(*c).write).handler = Some(on_event);
        p.stage = Stage::Sending;
        send(p)
    }
}

fn send(p: &mut Probe) {
    let c = p.conn;
    // SAFETY: `c` is our live connection; `send` writes from our request buffer.
    unsafe {
        while p.sent < p.request.len() {
            let Some(send) = (*c).send else {
                return abandon(p);
            };
            let n = send(
                c,
                p.request.as_mut_ptr().add(p.sent),
                p.request.len() - p.sent,
            );
            if n == AGAIN {
                if ngx_handle_write_event((*c).write, 0) != OK {
                    return abandon(p);
                }
                arm(p, (*c).write);
                return;
            }
            if n <= 0 {
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if retry_fresh(p) {
                    return;
                }
                return finish(p, Reason::Io(errno as u32));
            }
            p.sent += n as usize;
        }
        if (*(*c).write).timer_set() != 0 {
            nginx_sys::ngx_del_timer((*c).write);
        }
        // Done writing: with level-triggered event methods (poll, select) the write event must
        // be removed or every loop turn would wake us up (a no-op with epoll).
        if ngx_handle_write_event((*c).write, 0) != OK {
            return abandon(p);
        }
        p.stage = Stage::Reading;
        arm(p, (*c).read);
        read(p)
    }
}

fn read(p: &mut Probe) {
    let c = p.conn;
    let head = p.setup().conf.method == HttpMethod::Head;
    loop {
        // One byte more than the limit, so that an oversized response is recognised.
        let room = (MAX_RESPONSE + 1).saturating_sub(p.buf.len());
        let mut eof = room == 0;
        let mut broken = 0u32;
        if room > 0 {
            // Health answers are small: grow the buffer in steps rather than reserving the
            // whole limit for every probe.
            p.buf.reserve(room.min(2048));
            let room = room.min(p.buf.capacity() - p.buf.len());
            // SAFETY: `recv` writes at most `room` bytes into the reserved spare capacity,
            // and we only extend the length by what it reports.
            let n = unsafe {
                let Some(recv) = (*c).recv else {
                    return abandon(p);
                };
                let spare = p.buf.as_mut_ptr().add(p.buf.len());
                recv(c, spare, room)
            };
            if n > 0 {
                // SAFETY: `recv` initialised `n` bytes of the spare capacity.
                unsafe { p.buf.set_len(p.buf.len() + n as usize) };
            } else if n == 0 {
                eof = true;
            } else if n == AGAIN {
                // fall through to parse what we have
            } else {
                eof = true;
                broken = std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as u32;
            }
            match p.parser.parse(&p.buf, eof, head) {
                Progress::NeedMore if n == AGAIN => {
                    // SAFETY: `c` is our live connection.
                    if unsafe { ngx_handle_read_event((*c).read, 0) } != OK {
                        return abandon(p);
                    }
                    return;
                }
                Progress::NeedMore => continue,
                Progress::Complete {
                    status,
                    body,
                    reusable,
                } => {
                    p.reusable = reusable;
                    return judge(p, status, &body);
                }
                Progress::Invalid(_) if eof && retry_fresh(p) => return,
                Progress::Invalid(_) if broken != 0 => return finish(p, Reason::Io(broken)),
                Progress::Invalid(why) => return finish(p, Reason::invalid(why)),
            }
        }
        match p.parser.parse(&p.buf, eof, head) {
            Progress::Complete { status, body, .. } => return judge(p, status, &body),
            Progress::Invalid(why) => return finish(p, Reason::invalid(why)),
            Progress::NeedMore => return finish(p, Reason::invalid(ResponseError::TooLong)),
        }
    }
}

fn judge(p: &mut Probe, status: u16, body: &[u8]) {
    let conf = &p.setup().conf;
    if !conf.status.contains(status) {
        return finish(p, Reason::Status(status));
    }
    let re = p.setup().regex;
    if !re.is_null() {
        let mut s = ngx_str_t {
            len: body.len(),
            data: body.as_ptr() as *mut u8,
        };
        // SAFETY: the regex was compiled at configuration time; `s` points into `body`.
        let rc = unsafe { ngx_regex_exec(re, &mut s, ptr::null_mut(), 0) };
        if rc < 0 {
            return finish(
                p,
                if rc == nginx_sys::NGX_REGEX_NO_MATCHED as ngx_int_t {
                    Reason::BodyMismatch
                } else {
                    Reason::Internal
                },
            );
        }
    }
    finish(p, Reason::Passed)
}

/// Ends the attempt without a verdict: for failures of this worker (out of connections or
/// memory, an event-registration error, the worker shutting down), which say nothing about the
/// peer and must not count as failed checks in shared memory.
fn abandon(p: &mut Probe) {
    close_attempt(p);
}

/// Closes the attempt's (or the kept) connection and frees its pool.
fn close_attempt(p: &mut Probe) {
    if !p.conn.is_null() {
        unpark(p);
    }
    // SAFETY: `conn` and `pool` are ours and not used after this.
    unsafe {
        let c = p.conn;
        if !c.is_null() {
            if !(*c).ssl.is_null() {
                keep_tls_session(p, c);
                (*(*c).ssl).set_no_wait_shutdown(1);
                (*(*c).ssl).set_no_send_shutdown(1);
                ngx_ssl_shutdown(c);
            }
            ngx_close_connection(c);
            p.conn = ptr::null_mut();
        }
        if !p.pool.is_null() {
            ngx_destroy_pool(p.pool);
            p.pool = ptr::null_mut();
        }
    }
    p.stage = Stage::Idle;
    reset_buf(p);
}

/// Empties the response buffer: a small one is kept for the next probe, a large one given back.
fn reset_buf(p: &mut Probe) {
    if p.buf.capacity() > 4096 {
        p.buf = Vec::new();
    } else {
        p.buf.clear();
    }
    p.parser = Parser::default();
}

/// True when nothing is pending on connection `c`: no end of stream or error seen, no data
/// buffered in TLS or waiting in the socket. (A kept connection must not carry anything
/// between two probes: stale bytes would be read as the next answer.)
fn quiet(c: *mut ngx_connection_t) -> bool {
    // SAFETY: `c` is our live connection; the peek reads nothing out of the socket.
    unsafe {
        let (rev, wev) = (&*(*c).read, &*(*c).write);
        if rev.eof() != 0 || rev.error() != 0 || rev.pending_eof() != 0 || wev.error() != 0 {
            return false;
        }
        let ssl = (*c).ssl;
        if !ssl.is_null()
            && (nginx_sys::SSL_pending((*ssl).connection) > 0
                || (*ssl).last == nginx_sys::NGX_DONE as ngx_int_t
                || (*ssl).last == ERROR)
        {
            return false;
        }
        peek(c) == Peek::Nothing
    }
}

/// How many idle probe connections a worker may keep: a quarter of `worker_connections`.
fn keep_limit() -> usize {
    // SAFETY: the worker's cycle is live; `connection_n` is set from worker_connections.
    unsafe {
        nginx_sys::ngx_cycle
            .as_ref()
            .map_or(0, |c| c.connection_n / 4)
    }
}

/// Keeps the attempt's connection, idle, for the next probe of this peer (or closes it when
/// it cannot be kept).
fn park(p: &mut Probe) {
    let c = p.conn;
    if KEPT.load(Relaxed) >= keep_limit() {
        return close_attempt(p);
    }
    // SAFETY: `c` is our live connection; from here its events go to `on_idle`, and nginx
    // closes it through them when the worker exits (it is marked idle).
    unsafe {
        for ev in [(*c).read, (*c).write] {
            if (*ev).timer_set() != 0 {
                nginx_sys::ngx_del_timer(ev);
            }
            (*ev).handler = Some(on_idle);
        }
        (*c).set_idle(1);
        // Whatever arrives from now on is a new event; anything already there (or a close
        // already seen) is found by `quiet` before the connection is reused.
        (*(*c).read).set_ready(0);
        if ngx_handle_read_event((*c).read, 0) != OK {
            return close_attempt(p);
        }
    }
    KEPT.fetch_add(1, Relaxed);
    p.parked = true;
    p.stage = Stage::Idle;
    p.sent = 0;
    reset_buf(p);
}

/// The kept connection goes back to work (or is about to be closed).
fn unpark(p: &mut Probe) {
    if core::mem::take(&mut p.parked) {
        KEPT.fetch_sub(1, Relaxed);
        // SAFETY: a kept connection is live until `close_attempt` nulls it.
        unsafe { (*p.conn).set_idle(0) };
    }
}

/// Events of an idle kept connection: anything from the peer (data, a close, a reset) or a
/// close request from nginx ends it, quietly — it says nothing about the peer's health.
unsafe extern "C" fn on_idle(ev: *mut ngx_event_t) {
    // SAFETY: connection events carry the connection; its `data` is our probe.
    let (c, p) = unsafe {
        let c = (*ev).data as *mut ngx_connection_t;
        (c, &mut *((*c).data as *mut Probe))
    };
    // SAFETY: `c` is live while its events are.
    unsafe {
        if (*c).close() == 0 {
            if (*ev).write() != 0 {
                return;
            }
            if peek(c) != Peek::Something {
                // Nothing (or interrupted): wait for the next event (with poll/select a ready
                // event would otherwise be taken out of the set).
                (*ev).set_ready(0);
                if ngx_handle_read_event((*c).read, 0) == OK {
                    return;
                }
            }
        }
    }
    close_attempt(p);
}

/// Keeps the session of a TLS connection about to close, when it can be resumed (with TLS 1.3
/// only once the server's session ticket has arrived; otherwise the previous one stays).
///
/// # Safety
/// `c` must be the probe's live connection, with a TLS object.
unsafe fn keep_tls_session(p: &mut Probe, c: *mut ngx_connection_t) {
    // SAFETY: guaranteed by the caller; SSL_get1_session returns a new reference (or null),
    // which the probe owns from here, releasing the one it replaces.
    unsafe {
        let ssl = (*(*c).ssl).connection;
        // Not with verify=on: a resumed session carries the verdict of its first handshake
        // (chain, expiry, name), and each new connection must check the certificate afresh.
        if (*(*c).ssl).handshaked() == 0 || p.setup().conf.verify {
            return;
        }
        let session = nginx_sys::SSL_get1_session(ssl);
        if session.is_null() {
            return;
        }
        if nginx_sys::SSL_SESSION_is_resumable(session) != 1 {
            nginx_sys::SSL_SESSION_free(session);
            return;
        }
        let old = core::mem::replace(&mut p.tls_session, session);
        if !old.is_null() {
            nginx_sys::SSL_SESSION_free(old);
        }
    }
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
    if let Some(t) = transition {
        let u = p.upstream();
        let peer = &u.peers[p.peer];
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
                bytes(&peer.name).escape_ascii(),
                bytes(&u.name).escape_ascii(),
                change
            );
        }
    }
}
