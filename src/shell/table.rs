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
//!
//! Membership: the peers and their selectors form one `Members` snapshot. An upstream whose
//! servers are all addresses keeps the one it was configured with; an upstream with
//! `server NAME resolve` gets a new snapshot in each worker whenever nginx's resolver changes
//! the peer list (`shell::resolve`), and every request keeps the snapshot it started with (a
//! reference count), so the set of peers never changes under a request.

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::AtomicU32;
use std::rc::Rc;

use nginx_sys::{
    ngx_http_upstream_rr_peer_t, ngx_http_upstream_rr_peers_t, ngx_sockaddr_t, ngx_str_t, sockaddr,
    socklen_t,
};

use crate::balance::{Limits, Method, MethodConf, Selector};
use crate::shm::PeerShared;

/// A record key (`shm::table::peer_key`).
pub use crate::balance::membership::{Key, KeyMap};

/// The address, name and `server` text of a resolved peer, copied out of nginx's shared list
/// (whose entries nginx frees when the name's answer changes): the peer's strings point here.
pub struct OwnedAddr {
    sockaddr: ngx_sockaddr_t,
    socklen: socklen_t,
    /// Point into `_text`.
    name: ngx_str_t,
    server: ngx_str_t,
    _text: Box<[u8]>,
}

impl OwnedAddr {
    /// A copy of `socklen` bytes of `sockaddr` (at most an `ngx_sockaddr_t`), and the texts.
    ///
    /// # Safety
    /// `sockaddr` points to `socklen` readable bytes.
    pub unsafe fn new(
        sockaddr: *const sockaddr,
        socklen: socklen_t,
        name: &[u8],
        server: &[u8],
    ) -> Rc<OwnedAddr> {
        // SAFETY: zeroed bytes are a valid (empty) sockaddr union.
        let mut copy: ngx_sockaddr_t = unsafe { core::mem::zeroed() };
        let len = (socklen as usize).min(core::mem::size_of::<ngx_sockaddr_t>());
        // SAFETY: the caller's `sockaddr` has `socklen` bytes; `copy` has room for `len`.
        unsafe {
            ptr::copy_nonoverlapping(
                sockaddr as *const u8,
                ptr::addr_of_mut!(copy) as *mut u8,
                len,
            )
        };
        let text: Box<[u8]> = [name, server].concat().into();
        let at = text.as_ptr() as *mut u8;
        Rc::new(OwnedAddr {
            sockaddr: copy,
            socklen: len as socklen_t,
            name: ngx_str_t {
                len: name.len(),
                data: at,
            },
            // SAFETY: `name.len()` is within `text` (it holds both texts).
            server: ngx_str_t {
                len: server.len(),
                data: unsafe { at.add(name.len()) },
            },
            _text: text,
        })
    }
}

/// Where a peer's address, name (`127.0.0.1:8081`, what `$upstream_addr` shows) and `server`
/// text live: for a configured peer, nginx's round-robin peer (in the configuration's pool, alive
/// as long as the configuration); for a resolved or added peer, a copy of its own (an `Rc`),
/// kept alive by every snapshot, watch and probe that holds the peer. One tagged pointer (the
/// low bit set for the copy), instead of copies of the pointers and lengths in every `Peer`
/// and health-check watch: this is per peer, per worker, at 100,000 peers.
pub struct Addr(ptr::NonNull<u8>);

/// Both kinds of target are aligned to at least 2, so the low bit of the pointer is free.
const _: () = assert!(
    core::mem::align_of::<OwnedAddr>() >= 2
        && core::mem::align_of::<ngx_http_upstream_rr_peer_t>() >= 2
);

enum AddrRef<'a> {
    Conf(&'a ngx_http_upstream_rr_peer_t),
    Owned(&'a OwnedAddr),
}

impl Addr {
    /// A configured peer's: `p` must outlive every `Peer` and watch made from it (nginx's
    /// round-robin peers live in the configuration's pool).
    pub fn conf(p: &ngx_http_upstream_rr_peer_t) -> Addr {
        Addr(ptr::NonNull::from(p).cast())
    }

    pub fn owned(o: Rc<OwnedAddr>) -> Addr {
        let raw = Rc::into_raw(o) as *mut u8;
        // SAFETY: `raw` is non-null and aligned to at least 2 (asserted above), so `raw + 1`
        // is non-null and still inside the allocation's first bytes; `Drop` undoes the tag.
        Addr(unsafe { ptr::NonNull::new_unchecked(raw.add(1)) })
    }

    #[inline]
    fn get(&self) -> AddrRef<'_> {
        let raw = self.0.as_ptr();
        if raw as usize & 1 == 0 {
            // SAFETY: untagged: a configured peer's nginx peer, alive as long as the
            // configuration, which outlives `self` (`Addr::conf`).
            AddrRef::Conf(unsafe { &*(raw as *const ngx_http_upstream_rr_peer_t) })
        } else {
            // SAFETY: tagged: from `Rc::into_raw` in `Addr::owned`; `self` holds one strong
            // reference, so the value is alive while `self` is borrowed.
            AddrRef::Owned(unsafe { &*(raw.sub(1) as *const OwnedAddr) })
        }
    }

    #[inline]
    pub fn sockaddr(&self) -> *mut sockaddr {
        match self.get() {
            AddrRef::Conf(p) => p.sockaddr,
            AddrRef::Owned(o) => ptr::addr_of!(o.sockaddr) as *mut sockaddr,
        }
    }

    #[inline]
    pub fn socklen(&self) -> socklen_t {
        match self.get() {
            AddrRef::Conf(p) => p.socklen,
            AddrRef::Owned(o) => o.socklen,
        }
    }

    /// `sockaddr()`, `socklen()` and `name()` at once (what a connection to the peer needs).
    #[inline]
    pub fn parts(&self) -> (*mut sockaddr, socklen_t, &ngx_str_t) {
        match self.get() {
            AddrRef::Conf(p) => (p.sockaddr, p.socklen, &p.name),
            AddrRef::Owned(o) => (
                ptr::addr_of!(o.sockaddr) as *mut sockaddr,
                o.socklen,
                &o.name,
            ),
        }
    }

    /// The address as text, e.g. `127.0.0.1:8081`.
    #[inline]
    pub fn name(&self) -> &ngx_str_t {
        match self.get() {
            AddrRef::Conf(p) => &p.name,
            AddrRef::Owned(o) => &o.name,
        }
    }

    /// The `server` line's argument as written (for a peer from an SRV record, its target).
    #[inline]
    pub fn server(&self) -> &ngx_str_t {
        match self.get() {
            AddrRef::Conf(p) => &p.server,
            AddrRef::Owned(o) => &o.server,
        }
    }
}

impl Clone for Addr {
    fn clone(&self) -> Addr {
        let raw = self.0.as_ptr();
        if raw as usize & 1 == 1 {
            // SAFETY: tagged: an `Rc<OwnedAddr>` pointer (`Addr::owned`) of which `self` holds
            // a strong reference; the clone holds another.
            unsafe { Rc::increment_strong_count(raw.sub(1) as *const OwnedAddr) };
        }
        Addr(self.0)
    }
}

impl Drop for Addr {
    fn drop(&mut self) {
        let raw = self.0.as_ptr();
        if raw as usize & 1 == 1 {
            // SAFETY: tagged: gives back the strong reference `self` holds (`Addr::owned`,
            // `clone`).
            unsafe { Rc::decrement_strong_count(raw.sub(1) as *const OwnedAddr) };
        }
    }
}

#[derive(Clone)]
pub struct Peer {
    /// The address and its texts (`name()`, `server()`).
    pub addr: Addr,
    /// The weight in use: the configured one, or the one an operator set (`lb_api`).
    pub weight: u32,
    /// The weight of the `server` line (or the SRV record).
    pub conf_weight: u32,
    pub limits: Limits,
    pub down: bool,
    pub backup: bool,
    /// This peer's record in the shared zone; set by `shell::zone::commit` before workers
    /// start, or by `shell::resolve` when a resolved address joins.
    pub shared: *const PeerShared,
    /// The record's index in the zone's table (`Peer::PRIVATE`: a record private to this
    /// worker, for a configured peer that found no room, see `shell::zone::private_record`);
    /// `record()` reads it. (u32, as the table's capacity: this struct is per peer, per worker.)
    pub(in crate::shell) record: u32,
    /// The record's key (upstream name and address).
    pub key: Key,
    /// This worker's count of its connections to the peer, in the zone (see
    /// `shm::table::Table::take_row`); set with `shared`, then per worker at its start.
    pub active: *const AtomicU32,
    /// The peer's place in this worker's per-peer state that outlives snapshots (idle
    /// keepalive connections, the TLS session): its position for configured peers; for
    /// resolved peers a place handed out when the address joins and freed when it leaves.
    /// `slot()` reads it.
    pub(in crate::shell) slot: u32,
    /// Came from `server NAME resolve` (nginx's resolver) rather than an address.
    pub resolved: bool,
    /// Added through `lb_api` (`shm::added`).
    pub added: bool,
    /// What the weight is multiplied by for selection: 1 without `lb_slow_start`; with it,
    /// the ramp's step (`balance::slow_start`, `STEPS` once at full weight).
    pub ramp: u32,
}

/// One peer of nginx's round-robin lists, as its `server` line set it.
pub struct ServerLine {
    pub addr: Addr,
    pub weight: i64,
    pub max_fails: u64,
    pub fail_timeout_s: nginx_sys::time_t,
    pub max_conns: u64,
    pub down: bool,
    pub backup: bool,
}

/// One consistent set of peers and the selection state over it.
pub struct Members {
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
    /// Peers by key (resolved upstreams only: to tell whether a peer of an older snapshot is
    /// still a member).
    pub index: Option<KeyMap<usize>>,
    /// Holders of this snapshot: the upstream (while it is current) and requests.
    refs: Cell<usize>,
}

impl Members {
    /// Builds the selectors over `peers` (primaries first, `primaries` of them).
    pub fn new(method: Method, peers: Vec<Peer>, primaries: usize, indexed: bool) -> Members {
        let weights: Vec<u32> = peers.iter().map(Peer::selection_weight).collect();
        let primary = Selector::new(method, &weights[..primaries], 1);
        let backup = Selector::new(method, &weights[primaries..], 2);
        Members::assemble(peers, primaries, primary, backup, indexed)
    }

    /// A snapshot from its peers and the selection state built over them.
    fn assemble(
        peers: Vec<Peer>,
        primaries: usize,
        primary: Selector,
        backup: Selector,
        indexed: bool,
    ) -> Members {
        let tries = peers.iter().filter(|p| !p.down).count();
        let live_primaries = peers[..primaries].iter().filter(|p| !p.down).count();
        let single = live_primaries == 1 && tries == 1;
        let index = indexed.then(|| peers.iter().enumerate().map(|(i, p)| (p.key, i)).collect());
        Members {
            primary,
            backup,
            peers,
            primaries,
            tries,
            single,
            index,
            refs: Cell::new(1),
        }
    }

    /// The snapshot of a changed peer set, from `prev`: `origin[i]` is new peer `i`'s index in
    /// `prev`, if it was there. Selection state is carried over where it can be (see
    /// `Selector::follow`).
    pub fn follow(
        method: Method,
        peers: Vec<Peer>,
        primaries: usize,
        prev: &Members,
        origin: &[Option<usize>],
    ) -> Members {
        let weights: Vec<u32> = peers.iter().map(Peer::selection_weight).collect();
        let old: Vec<u32> = prev.peers.iter().map(Peer::selection_weight).collect();
        // Origins within each list (a peer that moved between primaries and backups is new
        // to its list).
        let local =
            |range: core::ops::Range<usize>, base: usize, old_range: core::ops::Range<usize>| {
                origin[range]
                    .iter()
                    .map(|o| o.filter(|j| old_range.contains(j)).map(|j| j - base))
                    .collect::<Vec<_>>()
            };
        let n = peers.len();
        let primary = prev.primary.follow(
            method,
            &local(0..primaries, 0, 0..prev.primaries),
            &old[..prev.primaries],
            &weights[..primaries],
            1,
        );
        let backup = prev.backup.follow(
            method,
            &local(
                primaries..n,
                prev.primaries,
                prev.primaries..prev.peers.len(),
            ),
            &old[prev.primaries..],
            &weights[primaries..],
            2,
        );
        Members::assemble(peers, primaries, primary, backup, true)
    }

    /// Builds the selection state anew from the peers' weights (after they changed).
    pub fn reselect(&mut self, method: Method, seed: u64) {
        let weights: Vec<u32> = self.peers.iter().map(Peer::selection_weight).collect();
        self.primary = Selector::new(method, &weights[..self.primaries], 1);
        self.backup = Selector::new(method, &weights[self.primaries..], 2);
        self.reseed(seed);
    }

    /// Gives this worker's copy its own random sequences (p2c).
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

    /// Whether `p` (of an older snapshot) is still a member, with the same record (an address
    /// that left and came back may have another record by now).
    pub fn still_has(&self, p: &Peer) -> bool {
        match &self.index {
            None => true,
            Some(i) => i
                .get(&p.key)
                .is_some_and(|&j| core::ptr::eq(self.peers[j].shared, p.shared)),
        }
    }

    /// A new snapshot held once (by its creator).
    pub fn into_raw(self) -> *mut Members {
        Box::into_raw(Box::new(self))
    }

    /// One more holder.
    ///
    /// # Safety
    /// `m` must be a live snapshot from `into_raw`, used by this worker only.
    pub unsafe fn retain(m: *mut Members) {
        // SAFETY: as required by the caller.
        unsafe { (*m).refs.set((*m).refs.get() + 1) };
    }

    /// One holder less; the last one frees the snapshot.
    ///
    /// # Safety
    /// As for `retain`; the caller's reference is not used afterwards.
    pub unsafe fn release(m: *mut Members) {
        // SAFETY: as required by the caller; the last holder owns the box.
        unsafe {
            debug_assert!((*m).refs.get() > 0);
            let left = (*m).refs.get() - 1;
            (*m).refs.set(left);
            if left == 0 {
                drop(Box::from_raw(m));
            }
        }
    }
}

/// `lb_slow_start`: the ramp's length and this worker's next look at the ramps.
#[derive(Clone, Copy)]
pub struct SlowStart {
    pub ms: u64,
    pub next_eval_ms: u64,
}

/// `lb_panic`: this worker's view of whether the upstream is in panic mode.
pub struct Panic {
    pub percent: u32,
    /// When the available peers are counted next (nginx's monotonic ms).
    pub next_eval_ms: u64,
    pub active: bool,
}

impl Panic {
    pub fn new(percent: u32) -> Panic {
        Panic {
            percent,
            next_eval_ms: 0,
            active: false,
        }
    }
}

/// Which of nginx's proxies an upstream serves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// `http { upstream {} }`.
    Http,
    /// `stream { upstream {} }` (TCP and UDP).
    Stream,
}

impl Kind {
    /// What goes before `upstream "NAME"` in a log line: "stream " for a stream upstream, so
    /// that an http and a stream upstream of one name can be told apart.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Http => "",
            Kind::Stream => "stream ",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Stream => "stream",
        }
    }

    /// The name an upstream of this kind called `name` files its records and added peers
    /// under (see `Upstream::key_name`).
    pub fn key_name(self, name: &[u8]) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Kind::Http => std::borrow::Cow::Borrowed(name),
            Kind::Stream => std::borrow::Cow::Owned([&b"\0stream\0"[..], name].concat()),
        }
    }
}

pub struct Upstream {
    pub name: ngx_str_t,
    /// `http` or `stream`: an http and a stream upstream may have the same name.
    pub kind: Kind,
    pub method: Method,
    /// Time constant of the response-time average, ms.
    pub decay_ms: u64,
    /// The current peers (a snapshot this upstream holds once).
    pub members: *mut Members,
    /// The TLS session of this worker's last connection to each slot's peer (an OpenSSL
    /// `SSL_SESSION` holding one reference), offered when the next one is made
    /// (`proxy_ssl_session_reuse`). Private to each worker, like nginx's own round-robin
    /// without a `zone`. Grown on the first session kept for a slot: upstreams that are not
    /// reached over TLS never pay for it.
    pub sessions: core::cell::RefCell<Vec<Cell<*mut c_void>>>,
    /// Active health checks (`lb_check`), if configured.
    pub check: Option<Box<crate::shell::check::CheckSetup>>,
    /// Every peer has its shared record (set by `shell::zone` before workers start, with
    /// `set_ready`).
    pub records_ready: bool,
    /// Picks may take `shell::pick`'s plain path: round-robin, no `lb_panic`, `lb_outlier`
    /// or `lb_keepalive` (set with `records_ready`).
    pub plain: bool,
    /// The same for least_conn, with or without `lb_keepalive`: no `lb_panic` or
    /// `lb_outlier`.
    pub plain_least_conn: bool,
    /// Idle connections per slot (`lb_keepalive`), if configured.
    pub keepalive: Option<Box<crate::shell::keepalive::PeerCaches>>,
    /// This worker's seed for p2c (set after the fork).
    pub seed: u64,
    /// `lb_panic`, if configured.
    pub panic: Option<Panic>,
    /// `lb_outlier`, if configured.
    pub outlier: Option<crate::balance::outlier::OutlierConf>,
    /// `lb_slow_start`: the ramp's length, ms, and when this worker looks at the ramps next.
    pub slow_start: Option<SlowStart>,
    /// Servers with `resolve`: how this worker follows nginx's resolver.
    pub dynamic: Option<Box<crate::shell::resolve::Dynamic>>,
    /// The zone's counter of weight changes made through `lb_api` (null before the commit),
    /// and the value the peers' weights reflect.
    pub weights: *const core::sync::atomic::AtomicU32,
    pub weights_seen: u32,
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
        let mut primaries = 0;
        let mut list = rr;
        let mut backup = false;
        // SAFETY: the caller guarantees `rr` and its linked lists are valid.
        let mut peers = unsafe {
            let backups = (*rr).next;
            let n = (*rr).number
                + if backups.is_null() {
                    0
                } else {
                    (*backups).number
                };
            Vec::with_capacity(n)
        };
        // SAFETY: as above.
        unsafe {
            while !list.is_null() {
                let mut p: *const ngx_http_upstream_rr_peer_t = (*list).peer;
                while !p.is_null() {
                    let mut peer = Peer::from_rr(&*p, backup);
                    peer.set_slot(peers.len());
                    peers.push(peer);
                    p = (*p).next;
                }
                if !backup {
                    primaries = peers.len();
                }
                backup = true;
                list = (*list).next;
            }
        }
        Upstream::from_peers(name, Kind::Http, conf, peers, primaries)
    }

    /// Builds the table from its peers (primaries first, `primaries` of them, each with its
    /// slot set to its position).
    pub fn from_peers(
        name: ngx_str_t,
        kind: Kind,
        conf: MethodConf,
        peers: Vec<Peer>,
        primaries: usize,
    ) -> Upstream {
        Upstream {
            name,
            kind,
            method: conf.method,
            decay_ms: conf.decay_ms,
            members: Members::new(conf.method, peers, primaries, false).into_raw(),
            sessions: Default::default(),
            check: None,
            records_ready: false,
            plain: false,
            plain_least_conn: false,
            keepalive: None,
            seed: 1,
            panic: None,
            outlier: None,
            slow_start: None,
            dynamic: None,
            weights: ptr::null(),
            weights_seen: 0,
        }
    }

    /// The upstream's name as its peers' record keys hash it: the name for `http {}`
    /// upstreams (as before stream upstreams existed, so records carry over a reload to this
    /// version), the name behind a prefix no `upstream` name can have for `stream {}` ones.
    pub fn key_name(&self) -> std::borrow::Cow<'static, [u8]> {
        // SAFETY: the name is an nginx string from the configuration pool, which outlives the
        // table.
        let name: &'static [u8] = unsafe { crate::shell::nginx::bytes(&self.name) };
        self.kind.key_name(name)
    }

    /// Every peer has its shared record: requests may start. Its configuration is complete
    /// by then, so this also decides whether its picks may take the plain path.
    pub fn set_ready(&mut self) {
        self.records_ready = true;
        let judged_plainly = self.panic.is_none() && self.outlier.is_none();
        self.plain =
            judged_plainly && self.method == Method::RoundRobin && self.keepalive.is_none();
        self.plain_least_conn = judged_plainly && self.method == Method::LeastConn;
    }

    /// A peer's `lb_slow_start` ramp started (its record says since when): every worker
    /// rebuilds its selection state at its next request (`follow_weights`), rather than at
    /// its next look at the ramps, up to a second later, with the peer at its full weight
    /// meanwhile.
    pub fn ramp_started(&self) {
        if self.slow_start.is_some() && !self.weights.is_null() {
            // SAFETY: the counter lives in the zone, mapped for the life of the process.
            unsafe { &*self.weights }.fetch_add(1, core::sync::atomic::Ordering::Release);
        }
    }

    /// The current peers.
    pub fn current(&self) -> &Members {
        // SAFETY: `members` is always a live snapshot this upstream holds.
        unsafe { &*self.members }
    }

    /// The current peers, to change (before workers start, or in this worker).
    pub fn current_mut(&mut self) -> &mut Members {
        debug_assert_eq!(self.current().refs.get(), 1);
        // SAFETY: as in `current`; only called while no request holds the snapshot (before
        // workers start, or at a worker's start), so the upstream's is the only reference.
        unsafe { &mut *self.members }
    }

    /// Makes `m` the current snapshot (requests holding the old one keep it until they end).
    pub fn replace_members(&mut self, m: Members) {
        let old = core::mem::replace(&mut self.members, m.into_raw());
        // SAFETY: the upstream held the old snapshot once.
        unsafe { Members::release(old) };
    }

    /// Whether slot-indexed state (idle connections, TLS session) still belongs to `p`: a
    /// request that started before its resolved peer left must not touch the state of the
    /// address that took the slot over.
    pub fn owns_slot(&self, p: &Peer) -> bool {
        match &self.dynamic {
            None => true,
            Some(d) => d.slot_key(p.slot()) == Some(p.key),
        }
    }

    /// Gives this worker's copy its own random sequences (p2c), after the fork.
    pub fn reseed(&mut self, seed: u64) {
        if let Some(d) = self.dynamic.as_deref_mut() {
            d.seed = seed;
        }
        self.seed = seed;
        self.current_mut().reseed(seed);
    }

    /// Follows the weights operators set (`lb_api`): one load and compare per request; when
    /// the zone's counter moved, each peer's weight is read from its record again and, if one
    /// changed, the selection state is rebuilt (an admin action, not a per-request cost).
    #[inline]
    pub fn follow_weights(&mut self) {
        if self.weights.is_null() {
            return;
        }
        // SAFETY: the counter lives in the zone, mapped for the life of the process.
        let now = unsafe { &*self.weights }.load(core::sync::atomic::Ordering::Acquire);
        if now != self.weights_seen {
            self.weights_seen = now;
            self.reweigh();
        }
    }

    /// What a peer whose record is `record` multiplies its weight by now (`Peer::ramp`).
    pub fn ramp_of(&self, record: &PeerShared, now_ms: u64) -> u32 {
        match self.slow_start {
            None => 1,
            Some(ss) => crate::balance::slow_start::step(record.ramp_start(), now_ms, ss.ms),
        }
    }

    /// `lb_slow_start`: at most every `evaluate_every_ms`, each peer's ramp is looked at, and
    /// the selection state rebuilt if one moved (O(peers) per look, not per request).
    #[inline]
    pub fn follow_ramps(&mut self, now_ms: u64) {
        let Some(ss) = self.slow_start.as_mut() else {
            return;
        };
        if now_ms < ss.next_eval_ms {
            return;
        }
        ss.next_eval_ms = now_ms + crate::balance::slow_start::evaluate_every_ms(ss.ms);
        self.reweigh_at(now_ms);
    }

    /// Rebuilds the selection state if a peer's weight changed.
    pub fn reweigh(&mut self) {
        self.reweigh_at(crate::shell::nginx::now_ms());
    }

    /// Rebuilds the selection state if a peer's weight (`lb_api`) or ramp (`lb_slow_start`)
    /// changed.
    pub fn reweigh_at(&mut self, now_ms: u64) {
        let m = self.current();
        let weights: Vec<(u32, u32)> = m
            .peers
            .iter()
            .map(|p| {
                // SAFETY: every peer of a snapshot has its record.
                let s = unsafe { &*p.shared };
                (
                    s.weight_override().unwrap_or(p.conf_weight),
                    self.ramp_of(s, now_ms),
                )
            })
            .collect();
        if weights
            .iter()
            .zip(&m.peers)
            .all(|(&(w, r), p)| w == p.weight && r == p.ramp)
        {
            return;
        }
        let (method, seed) = (self.method, self.seed);
        if self.dynamic.is_some() {
            // Requests hold their snapshots: a new one (theirs stay as they are).
            let mut peers = m.peers.clone();
            for (p, (w, r)) in peers.iter_mut().zip(weights) {
                (p.weight, p.ramp) = (w, r);
            }
            let mut next = Members::new(method, peers, m.primaries, true);
            next.reseed(seed);
            self.replace_members(next);
        } else {
            // The one snapshot, changed in place: requests point to it without holding it,
            // and peer indices stay the same.
            let m = self.current_mut();
            for (p, (w, r)) in m.peers.iter_mut().zip(weights) {
                (p.weight, p.ramp) = (w, r);
            }
            m.reselect(method, seed);
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // SAFETY: the upstream holds one reference to its snapshot; requests that hold it
        // too release their own references, so the last holder frees it.
        unsafe { Members::release(self.members) };
        #[cfg(ngx_feature = "http_ssl")]
        for s in self.sessions.get_mut().iter() {
            let session = s.replace(ptr::null_mut());
            if !session.is_null() {
                // SAFETY: the upstream holds one reference to each peer's kept TLS session
                // (`shell::pick`); nothing uses it once the configuration is freed.
                unsafe { nginx_sys::SSL_SESSION_free(session as *mut nginx_sys::SSL_SESSION) };
            }
        }
    }
}

/// A fingerprint of a `server` line's parameters (never 0), to tell at a reload whether the
/// configuration changed a peer (`PeerShared::configured_as`).
pub fn line_fingerprint(weight: u32, limits: &Limits, backup: bool, down: bool) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in [
        u64::from(weight),
        u64::from(limits.max_fails),
        limits.fail_timeout_ms,
        u64::from(limits.max_conns),
        u64::from(backup),
        u64::from(down),
    ] {
        h = (h ^ x).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1
}

impl Peer {
    /// `record` of a peer whose record is private to this worker.
    const PRIVATE: u32 = u32::MAX;

    /// The index of the peer's record in the zone's table; `None` for a record private to this
    /// worker.
    #[inline]
    pub fn record(&self) -> Option<usize> {
        (self.record != Peer::PRIVATE).then_some(self.record as usize)
    }

    /// Sets the record's index (`None`: private to this worker).
    pub fn set_record(&mut self, record: Option<usize>) {
        self.record = record.map_or(Peer::PRIVATE, |r| {
            u32::try_from(r).expect("the table's capacity is a u32")
        });
    }

    /// The peer's place in this worker's per-peer state (idle keepalive connections, the TLS
    /// session).
    #[inline]
    pub fn slot(&self) -> usize {
        self.slot as usize
    }

    pub fn set_slot(&mut self, slot: usize) {
        self.slot = u32::try_from(slot).expect("fewer than 2^32 peers");
    }

    #[inline]
    pub fn sockaddr(&self) -> *mut sockaddr {
        self.addr.sockaddr()
    }

    #[inline]
    pub fn socklen(&self) -> socklen_t {
        self.addr.socklen()
    }

    /// The address, e.g. `127.0.0.1:8081` (what `$upstream_addr` shows).
    #[inline]
    pub fn name(&self) -> &ngx_str_t {
        self.addr.name()
    }

    /// The `server` line's argument, as written (for a peer from an SRV record, its target).
    #[inline]
    pub fn server(&self) -> &ngx_str_t {
        self.addr.server()
    }

    /// The weight its selector uses: 0 leaves a `down` peer out.
    pub fn selection_weight(&self) -> u32 {
        if self.down {
            0
        } else {
            self.weight.saturating_mul(self.ramp)
        }
    }

    /// This peer's `line_fingerprint`.
    pub fn fingerprint(&self) -> u64 {
        line_fingerprint(self.conf_weight, &self.limits, self.backup, self.down)
    }

    fn from_rr(p: &ngx_http_upstream_rr_peer_t, backup: bool) -> Peer {
        Peer::configured(ServerLine {
            addr: Addr::conf(p),
            weight: p.weight as i64,
            max_fails: p.max_fails as u64,
            fail_timeout_s: p.fail_timeout,
            max_conns: p.max_conns as u64,
            down: p.down != 0,
            backup,
        })
    }

    /// A configured peer from what nginx's round-robin code parsed out of its `server` line
    /// (http's or stream's: their peer structures carry the same fields).
    pub fn configured(l: ServerLine) -> Peer {
        Peer {
            addr: l.addr,
            weight: l.weight.clamp(1, u32::MAX as _) as u32,
            conf_weight: l.weight.clamp(1, u32::MAX as _) as u32,
            limits: Limits {
                max_fails: l.max_fails.min(u32::MAX as _) as u32,
                fail_timeout_ms: (l.fail_timeout_s.max(0) as u64).saturating_mul(1000),
                max_conns: l.max_conns.min(u32::MAX as _) as u32,
            },
            down: l.down,
            backup: l.backup,
            shared: ptr::null(),
            record: 0,
            key: (0, 0),
            active: ptr::null(),
            slot: 0,
            resolved: false,
            added: false,
            ramp: 1,
        }
    }
}
