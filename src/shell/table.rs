//! One upstream's peers as our module sees them, built from what nginx's round-robin
//! initialisation parsed out of the `server` lines (so `weight`, `max_fails`, `fail_timeout`,
//! `max_conns`, `backup`, `down` and hostname resolution mean exactly what they mean in nginx).
//!
//! Where selection state lives: the selection state of each method (the round-robin schedule
//! position, least_conn's tree of known connection counts, p2c's random generator) is private
//! to each worker (this table is built before the fork, so every worker has its own copy),
//! while failures, active connections, response times and counters are shared atomics in the
//! zone (`crate::shm`). A pick therefore takes no lock and allocates nothing, and every worker
//! sees the same health and load; the price is that workers are not in step with each other:
//! round-robin follows nginx's exact order in each worker, and the split over all workers is
//! exact per worker.

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::AtomicU32;

use nginx_sys::{
    ngx_http_upstream_rr_peer_t, ngx_http_upstream_rr_peers_t, ngx_str_t, sockaddr, socklen_t,
};

use crate::balance::{Limits, Method, MethodConf, Selector};
use crate::shm::PeerShared;

pub struct Peer {
    pub sockaddr: *mut sockaddr,
    pub socklen: socklen_t,
    /// The address, e.g. `127.0.0.1:8081` (what `$upstream_addr` shows).
    pub name: ngx_str_t,
    /// The `server` line's argument, as written.
    pub server: ngx_str_t,
    pub weight: u32,
    pub limits: Limits,
    pub down: bool,
    pub backup: bool,
    /// This peer's record in the shared zone; set by `shell::zone::commit` before workers start.
    pub shared: *const PeerShared,
    /// The record's index in the zone's table.
    pub record: usize,
    /// This worker's count of its connections to the peer, in the zone (see
    /// `shm::table::Table::take_row`); set with `shared`, then per worker at its start.
    pub active: *const AtomicU32,
    /// The TLS session of this worker's last connection to the peer (an OpenSSL `SSL_SESSION`
    /// holding one reference), offered when the next one is made (`proxy_ssl_session_reuse`).
    /// Private to each worker, like nginx's own round-robin without a `zone`.
    pub ssl_session: Cell<*mut c_void>,
}

pub struct Upstream {
    pub name: ngx_str_t,
    pub method: Method,
    /// Time constant of the response-time average, ms.
    pub decay_ms: u64,
    /// Primary peers first, then backups.
    pub peers: Vec<Peer>,
    pub primaries: usize,
    /// Selection over `peers[..primaries]`.
    pub primary: Selector,
    /// Selection over `peers[primaries..]`.
    pub backup: Selector,
    /// How many attempts a request may make (non-down peers), as nginx counts them.
    pub tries: usize,
    /// One non-down primary and no usable backup: like nginx's `peers->single`, the peer is
    /// never made unavailable by passive failures (there is nothing else to send requests to,
    /// so locking it out for `fail_timeout` would only turn a blip into an outage).
    pub single: bool,
    /// Active health checks (`lb_check`), if configured.
    pub check: Option<Box<crate::shell::check::CheckSetup>>,
    /// Every peer has its shared record (set by `shell::zone` before workers start).
    pub records_ready: bool,
    /// Idle connections per peer (`lb_keepalive`), if configured.
    pub keepalive: Option<Box<crate::shell::keepalive::PeerCaches>>,
}

impl Upstream {
    /// Builds the table from nginx's round-robin peer lists (primary list, then its `next`,
    /// the backup list).
    ///
    /// # Safety
    /// `rr` must be the peer lists `ngx_http_upstream_init_round_robin` just built; they live in
    /// the configuration pool, as long as this table.
    pub unsafe fn from_round_robin(
        name: ngx_str_t,
        conf: MethodConf,
        rr: *const ngx_http_upstream_rr_peers_t,
    ) -> Upstream {
        let mut peers = Vec::new();
        let mut primaries = 0;
        let mut list = rr;
        let mut backup = false;
        // SAFETY: the caller guarantees `rr` and its linked lists are valid.
        unsafe {
            while !list.is_null() {
                let mut p: *const ngx_http_upstream_rr_peer_t = (*list).peer;
                while !p.is_null() {
                    peers.push(Peer::from_rr(&*p, backup));
                    p = (*p).next;
                }
                if !backup {
                    primaries = peers.len();
                }
                backup = true;
                list = (*list).next;
            }
        }
        let weights: Vec<u32> = peers
            .iter()
            .map(|p| if p.down { 0 } else { p.weight })
            .collect();
        let tries = peers.iter().filter(|p| !p.down).count();
        let live_primaries = peers[..primaries].iter().filter(|p| !p.down).count();
        let single = live_primaries == 1 && tries == 1;
        Upstream {
            name,
            method: conf.method,
            decay_ms: conf.decay_ms,
            primary: Selector::new(conf.method, &weights[..primaries], 1),
            backup: Selector::new(conf.method, &weights[primaries..], 2),
            peers,
            primaries,
            tries,
            single,
            check: None,
            records_ready: false,
            keepalive: None,
        }
    }
}

impl Peer {
    fn from_rr(p: &ngx_http_upstream_rr_peer_t, backup: bool) -> Peer {
        Peer {
            sockaddr: p.sockaddr,
            socklen: p.socklen,
            name: p.name,
            server: p.server,
            weight: p.weight.clamp(1, u32::MAX as _) as u32,
            limits: Limits {
                max_fails: p.max_fails.min(u32::MAX as _) as u32,
                fail_timeout_ms: (p.fail_timeout.max(0) as u64).saturating_mul(1000),
                max_conns: p.max_conns.min(u32::MAX as _) as u32,
            },
            down: p.down != 0,
            backup,
            shared: ptr::null(),
            record: 0,
            active: ptr::null(),
            ssl_session: Cell::new(ptr::null_mut()),
        }
    }
}

impl Upstream {
    /// Gives this worker's copy its own random sequences (p2c), after the fork.
    pub fn reseed(&mut self, seed: u64) {
        for (k, s) in [&mut self.primary, &mut self.backup]
            .into_iter()
            .enumerate()
        {
            if let Selector::P2c(p) = s {
                p.reseed(seed.rotate_left(17 * k as u32 + 1));
            }
        }
    }
}
