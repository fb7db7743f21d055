//! Peers that change at run time: `server NAME resolve` (nginx 1.27.3+), following DNS, and
//! peers added through `lb_api` (upstreams with `zone`, any nginx version), in `http {}` and
//! `stream {}` upstreams alike: nginx's zone modules of both keep the lists the same way
//! (`ngx_http_upstream_zone_module.c` and `ngx_stream_upstream_zone_module.c` are one design),
//! and `shell::rr` reads both kinds of lists through one trait (`Lists` says which an
//! upstream has). Records and added peers are filed under the upstream's `key_name`, so an
//! http and a stream upstream of the same name never share them.
//!
//! Added peers are kept in our zone (`shm::added`, with a change counter in its header); they
//! join the entries read from nginx's lists below, and from there on they are peers like any
//! other (records, probes, keepalive slots, snapshots). An added address that the
//! configuration now has too is left out: the configuration wins.
//!
//! Why we follow nginx's own resolved list instead of resolving names ourselves: nginx already
//! does all of it, exactly as its users expect — `resolver`/`resolver_timeout`, TTLs and
//! `valid=`, `service=` (SRV records, their weights, and lower priorities as backups),
//! NXDOMAIN emptying the name while a timeout keeps the last answer, one worker asking on
//! behalf of all, and carrying the last answer over a reload (`preresolve`). It keeps the
//! result in the upstream's `zone` (`ngx_http_upstream_zone_module.c`): the configured peers
//! and, appended to the same lists, one peer per address of each name, edited under the
//! lists' write lock, with a counter (`*peers->config`) bumped on every change. Resolving
//! ourselves would duplicate that and could disagree with it.
//!
//! So each worker compares that counter with the one its peers reflect — once per request in
//! `init_peer`, and once a second from a timer so that idle workers and health checks follow
//! too. Nothing changed: one load and compare. Changed: it copies the lists under nginx's read
//! lock (nginx frees removed entries, so no pointer into them is kept), and compares them with
//! its current peers by record key (upstream name and address): a peer that stays keeps its
//! record (health, counters), slot (idle keepalive connections, TLS session) and probe; an
//! address that joins gets a record in our zone (starting in `lb_check`'s `default=` state), a
//! slot and a probe; one that leaves has its probe stopped at once, its idle connections
//! closed, and its record released (kept for it for `RELEASE_GRACE_MS` in case it comes back,
//! then reused once nothing is connected to it). The selectors are rebuilt over the new set
//! into a new snapshot; requests in flight keep theirs (`table::Members`).
//!
//! At a (re)load, the master builds each such upstream's peers from the same lists once nginx
//! has copied them into the new zone (`shell::zone::commit`), so addresses that persist keep
//! their state over the reload.

use core::ffi::c_void;
use core::ptr;
#[cfg(ngx_resolve)]
use core::sync::atomic::AtomicUsize;
use core::sync::atomic::{AtomicU32, Ordering::Acquire};

use nginx_sys::{
    ngx_cycle_t, ngx_event_t, ngx_http_upstream_rr_peers_t, ngx_http_upstream_srv_conf_t,
    ngx_rwlock_rlock, ngx_rwlock_unlock, ngx_shmtx_lock, ngx_shmtx_unlock, ngx_sockaddr_t,
    sockaddr, NGX_LOG_NOTICE, NGX_LOG_WARN,
};

use crate::balance::membership::{self, Action};
use crate::balance::Limits;
use crate::shell::conf::MainConf;
use crate::shell::nginx::{bytes, now_ms};
use crate::shell::probe;
use crate::shell::rr::{RrList, RrPeer};
use crate::shell::table::{
    line_fingerprint, Addr, Key, KeyMap, Members, OwnedAddr, Peer, Upstream,
};
use crate::shm::added;
use crate::shm::table::{self, Claim, Table};
use crate::shm::PeerShared;

/// How often an idle worker looks for changes, ms.
const POLL_MS: u64 = 1000;

/// Addresses the names of one upstream may have at once, unless `lb_upstream max_resolved=`
/// says otherwise.
pub const DEFAULT_MAX_RESOLVED: usize = 128;

/// The configuration of an upstream whose lists are followed: an http or a stream one (their
/// lists have the same shape, `shell::rr`).
#[derive(Clone, Copy)]
pub enum Lists {
    Http(*mut ngx_http_upstream_srv_conf_t),
    #[cfg(ngx_feature = "stream")]
    Stream(*mut nginx_sys::ngx_stream_upstream_srv_conf_t),
}

/// How one worker follows the resolved peers of one upstream.
pub struct Dynamic {
    us: Lists,
    /// `server ... resolve` lines.
    pub servers: usize,
    /// The value of nginx's change counter that the current peers reflect.
    seen: usize,
    /// Resolved addresses kept at most; the rest are ignored with a warning.
    pub max_resolved: usize,
    /// This worker's seed for p2c's random sequences.
    pub seed: u64,
    /// Peers `lb_api` may add (0: none).
    pub max_added: usize,
    /// The zone's counter of added-peer changes that the current peers reflect.
    seen_added: u32,
    /// The upstream's added peers the current peers were built with.
    added: Vec<added::AddedPeer>,
    /// The key of the peer each slot belongs to, `None` for a free slot.
    slots: Vec<Option<Key>>,
    free_slots: Vec<usize>,
    /// This worker's watches of checked peers, by peer key (`None`: another worker's to
    /// probe).
    pub probes: KeyMap<Option<probe::Handle>>,
    /// The addresses ignored at the last change (to warn once per change).
    ignored: usize,
    /// Some addresses found no record: apply the list again at the next tick.
    retry: bool,
    /// Size of the last copy of nginx's lists (room is reserved before the next one).
    last_entries: usize,
    last_text: usize,
    /// The last copy and its keys, so that the next one hashes only what is new.
    keys: KeyCache,
    /// The zone: table, its mutex, generation and this worker's row of counters.
    main: *const MainConf,
    timer: *mut ngx_event_t,
}

impl Dynamic {
    /// `servers`: the upstream's `server ... resolve` lines.
    pub fn new(us: Lists, servers: usize, max_resolved: usize, max_added: usize) -> Dynamic {
        Dynamic {
            us,
            servers,
            seen: usize::MAX,
            max_resolved,
            seed: 1,
            max_added,
            seen_added: u32::MAX,
            added: Vec::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            probes: KeyMap::default(),
            ignored: 0,
            retry: false,
            last_entries: 0,
            last_text: 0,
            keys: KeyCache::default(),
            main: ptr::null(),
            timer: ptr::null_mut(),
        }
    }

    /// The key of the peer slot `slot` belongs to.
    pub fn slot_key(&self, slot: usize) -> Option<Key> {
        self.slots.get(slot).copied().flatten()
    }

    fn take_slot(&mut self, key: Key) -> usize {
        match self.free_slots.pop() {
            Some(s) => {
                self.slots[s] = Some(key);
                s
            }
            None => {
                self.slots.push(Some(key));
                self.slots.len() - 1
            }
        }
    }
}

/// How many `server ... resolve` lines the lists hold.
///
/// # Safety
/// `rr` is the peer lists nginx's round-robin initialisation (http's or stream's) built.
#[cfg(ngx_resolve)]
pub unsafe fn resolve_servers<L: RrList>(rr: *const L) -> usize {
    let mut n = 0;
    let mut list = rr;
    // SAFETY: as required by the caller.
    unsafe {
        while !list.is_null() {
            let mut p = L::resolve(list);
            while !p.is_null() {
                n += 1;
                p = (*p).next();
            }
            list = L::next(list);
        }
    }
    n
}

/// One peer as read from nginx's shared list; its strings are ranges of the copy's text.
struct Entry {
    sockaddr: ngx_sockaddr_t,
    socklen: nginx_sys::socklen_t,
    name: core::ops::Range<usize>,
    server: core::ops::Range<usize>,
    weight: u32,
    limits: Limits,
    down: bool,
    backup: bool,
    resolved: bool,
    /// Added through `lb_api`.
    added: bool,
}

/// A copy of nginx's lists: the peers (primaries, then backups) and their strings.
#[derive(Default)]
struct Copy {
    entries: Vec<Entry>,
    text: Vec<u8>,
}

impl Copy {
    fn name(&self, e: &Entry) -> &[u8] {
        &self.text[e.name.clone()]
    }
    fn server(&self, e: &Entry) -> &[u8] {
        &self.text[e.server.clone()]
    }
}

/// Before nginx 1.27.3 there is no `resolve`.
///
/// # Safety
/// Nothing to uphold.
#[cfg(not(ngx_resolve))]
pub unsafe fn resolve_servers<L: RrList>(_rr: *const L) -> usize {
    0
}

/// Before nginx 1.27.3 the lists never change at run time.
#[cfg(not(ngx_resolve))]
unsafe fn config_counter<L: RrList>(_rr: *const L) -> usize {
    0
}

/// nginx's change counter of the lists.
#[cfg(ngx_resolve)]
unsafe fn config_counter<L: RrList>(rr: *const L) -> usize {
    // SAFETY: `config` points to an aligned machine word in the upstream zone, which nginx
    // changes under the lists' write lock; reading it atomically sees the old or the new
    // value, and a changed value is followed by a read of the lists under the read lock.
    unsafe {
        let c = L::config(rr);
        if c.is_null() {
            0
        } else {
            AtomicUsize::from_ptr(c).load(Acquire)
        }
    }
}

/// nginx's change counter of the upstream's lists now (`us->peer.data`: the zone's copy once
/// the zone is set up).
///
/// # Safety
/// `d`'s upstream configuration is alive (it is, for the cycle).
unsafe fn lists_counter(d: &Dynamic) -> usize {
    // SAFETY: as required by the caller.
    unsafe {
        match d.us {
            Lists::Http(us) => {
                config_counter((*us).peer.data as *const ngx_http_upstream_rr_peers_t)
            }
            #[cfg(ngx_feature = "stream")]
            Lists::Stream(us) => {
                config_counter((*us).peer.data as *const nginx_sys::ngx_stream_upstream_rr_peers_t)
            }
        }
    }
}

/// Copies the upstream's lists now (as `read_locked`).
///
/// # Safety
/// As for `lists_counter`.
unsafe fn read_lists(d: &Dynamic, copy: &mut Copy) -> usize {
    // SAFETY: as required by the caller; `peer.data` is the upstream's lists in its zone.
    unsafe {
        match d.us {
            Lists::Http(us) => {
                read_locked((*us).peer.data as *mut ngx_http_upstream_rr_peers_t, copy)
            }
            #[cfg(ngx_feature = "stream")]
            Lists::Stream(us) => read_locked(
                (*us).peer.data as *mut nginx_sys::ngx_stream_upstream_rr_peers_t,
                copy,
            ),
        }
    }
}

/// Appends one list's peers to `copy`.
///
/// # Safety
/// The list's read lock is held.
unsafe fn read_list<L: RrList>(list: *const L, backup: bool, copy: &mut Copy) {
    // SAFETY: as required by the caller; nginx's strings and addresses are valid while the
    // lock is held.
    unsafe {
        let mut p = L::first(list);
        while !p.is_null() {
            let q = &*p;
            let mut sa: ngx_sockaddr_t = core::mem::zeroed();
            let len = (q.socklen() as usize).min(core::mem::size_of::<ngx_sockaddr_t>());
            ptr::copy_nonoverlapping(
                q.sockaddr() as *const u8,
                ptr::addr_of_mut!(sa) as *mut u8,
                len,
            );
            let at = copy.text.len();
            copy.text.extend_from_slice(bytes(q.name()));
            let mid = copy.text.len();
            copy.text.extend_from_slice(bytes(q.server()));
            copy.entries.push(Entry {
                sockaddr: sa,
                socklen: len as _,
                name: at..mid,
                server: mid..copy.text.len(),
                weight: q.weight().clamp(1, u32::MAX as _) as u32,
                limits: Limits {
                    max_fails: q.max_fails().min(u32::MAX as _) as u32,
                    fail_timeout_ms: (q.fail_timeout().max(0) as u64).saturating_mul(1000),
                    max_conns: q.max_conns().min(u32::MAX as _) as u32,
                },
                down: q.down(),
                backup,
                resolved: q.resolved(),
                added: false,
            });
            p = q.next();
        }
    }
}

/// Copies nginx's lists under their read locks, doing nothing else there (nginx's resolver
/// waits for these locks with its event loop stopped, and a lock held by a process that dies
/// is never released): room for the copy is reserved before. Returns the change counter the
/// copy reflects.
///
/// # Safety
/// `rr` is the upstream's lists in its zone.
unsafe fn read_locked<L: RrList>(rr: *mut L, copy: &mut Copy) -> usize {
    // SAFETY: as required by the caller.
    unsafe {
        let backup = L::next(rr);
        ngx_rwlock_rlock(L::rwlock(rr));
        if !backup.is_null() {
            ngx_rwlock_rlock(L::rwlock(backup));
        }
        let seen = config_counter(rr);
        read_list(rr, false, copy);
        if !backup.is_null() {
            read_list(backup, true, copy);
            ngx_rwlock_unlock(L::rwlock(backup));
        }
        ngx_rwlock_unlock(L::rwlock(rr));
        seen
    }
}

/// The zone's counter of added-peer changes.
///
/// # Safety
/// `main` is this process's main conf.
unsafe fn added_counter(main: &MainConf) -> u32 {
    if main.table.is_null() {
        return 0;
    }
    // SAFETY: the header stays mapped for the life of the process.
    unsafe { (*main.table).added.load(Acquire) }
}

/// Whether the upstream's added peers differ from those its peers were built with (the zone's
/// counter moves for every upstream's changes).
///
/// # Safety
/// As for `refresh`.
unsafe fn added_changed(u: &Upstream) -> bool {
    let Some(d) = u.dynamic.as_deref() else {
        return false;
    };
    if d.max_added == 0 {
        return false;
    }
    // SAFETY: as required by the caller; the entries are read under the zone's mutex.
    unsafe {
        let main = &*d.main;
        let key = added::upstream_key(&u.key_name());
        let t = Table::from_header(main.table);
        ngx_shmtx_lock(ptr::addr_of_mut!((*main.pool).mutex));
        let same = added::of(t.added(), key).eq(d.added.iter());
        ngx_shmtx_unlock(ptr::addr_of_mut!((*main.pool).mutex));
        !same
    }
}

/// Appends the upstream's added peers to `copy` (except addresses the configuration has: it
/// wins), under the zone's mutex. `upstream` is the upstream's `key_name`. Returns the change
/// counter the copy reflects.
///
/// # Safety
/// `main` is this process's main conf, its table set.
unsafe fn read_added(
    main: &MainConf,
    upstream: &[u8],
    copy: &mut Copy,
    seen: &mut Vec<added::AddedPeer>,
) -> u32 {
    let configured: std::collections::HashSet<Vec<u8>> = copy
        .entries
        .iter()
        .filter(|e| !e.resolved)
        .map(|e| copy.name(e).to_vec())
        .collect();
    let key = added::upstream_key(upstream);
    let t = Table::from_header(main.table);
    // SAFETY: the zone's mutex guards the entries (`Table::added`); nothing else runs under it
    // here.
    unsafe {
        ngx_shmtx_lock(ptr::addr_of_mut!((*main.pool).mutex));
        let counter = (*main.table).added.load(Acquire);
        seen.clear();
        seen.extend(added::of(t.added(), key).copied());
        for a in seen.iter() {
            if configured.contains(a.name()) {
                continue;
            }
            let mut sa: ngx_sockaddr_t = core::mem::zeroed();
            let raw = a.sockaddr();
            let len = raw.len().min(core::mem::size_of::<ngx_sockaddr_t>());
            ptr::copy_nonoverlapping(raw.as_ptr(), ptr::addr_of_mut!(sa) as *mut u8, len);
            let at = copy.text.len();
            copy.text.extend_from_slice(a.name());
            let mid = copy.text.len();
            copy.text.extend_from_slice(a.name());
            copy.entries.push(Entry {
                sockaddr: sa,
                socklen: len as _,
                name: at..mid,
                server: mid..copy.text.len(),
                weight: a.weight.max(1),
                limits: Limits {
                    max_fails: a.max_fails,
                    fail_timeout_ms: a.fail_timeout_ms,
                    max_conns: a.max_conns,
                },
                down: false,
                backup: a.backup != 0,
                resolved: false,
                added: true,
            });
        }
        ngx_shmtx_unlock(ptr::addr_of_mut!((*main.pool).mutex));
        counter
    }
}

/// What the keys of the last copy were, for `KeyCache::keys`.
#[derive(Default)]
pub struct KeyCache {
    copy: Copy,
    keys: Vec<Key>,
    /// How many entries of the last copy have each base key (`Id::base_key`).
    count: KeyMap<u32>,
    /// Some base key occurs twice: keys are numbered by occurrence, computed in full.
    duplicates: bool,
}

impl KeyCache {
    /// The keys of `copy`'s entries (as `entry_keys`), hashing only entries that were not in
    /// the last copy (`membership::follow_keys`): a change of one address costs a comparison
    /// per entry and one hash. Keeps `copy` for the next time.
    fn keys(&mut self, upstream: &[u8], copy: Copy) -> &[Key] {
        if !self.duplicates && !self.copy.entries.is_empty() {
            if let Some(keys) = self.follow(upstream, &copy) {
                self.keys = keys;
                self.copy = copy;
                return &self.keys;
            }
        }
        // In full: the first copy, or duplicate addresses (numbered by occurrence).
        self.keys = entry_keys(upstream, &copy);
        self.count.clear();
        for e in &copy.entries {
            *self
                .count
                .entry(Id::of(&copy, e).base_key(upstream))
                .or_insert(0) += 1;
        }
        self.duplicates = self.count.values().any(|&n| n > 1);
        self.copy = copy;
        &self.keys
    }

    /// The keys from the last copy's (`membership::follow_keys`), or `None` when a new
    /// entry repeats a key.
    fn follow(&mut self, upstream: &[u8], copy: &Copy) -> Option<Vec<Key>> {
        let old: Vec<Id> = self
            .copy
            .entries
            .iter()
            .map(|e| Id::of(&self.copy, e))
            .collect();
        let new: Vec<Id> = copy.entries.iter().map(|e| Id::of(copy, e)).collect();
        membership::follow_keys(
            &old,
            &self.keys,
            &mut self.count,
            &new,
            |x| x.backup,
            |x| x.base_key(upstream),
        )
    }
}

/// An entry as `follow_keys` compares it: its list, origin and strings.
#[derive(PartialEq)]
struct Id<'a> {
    backup: bool,
    resolved: bool,
    added: bool,
    name: &'a [u8],
    server: &'a [u8],
}

impl<'a> Id<'a> {
    fn of(copy: &'a Copy, e: &Entry) -> Id<'a> {
        Id {
            backup: e.backup,
            resolved: e.resolved,
            added: e.added,
            name: copy.name(e),
            server: copy.server(e),
        }
    }

    fn base_key(&self, upstream: &[u8]) -> Key {
        if self.resolved {
            table::peer_key_of(upstream, &[self.name, b"\0resolve\0", self.server])
        } else {
            table::peer_key(upstream, self.name)
        }
    }
}

/// The record keys of the copy's peers. Configured peers are keyed by address, as in an
/// upstream without `resolve` (so that adding a resolved server to an upstream keeps the
/// state of its configured peers); resolved ones by address and the name they came from, so
/// that a resolved address equal to a configured one (or to another name's) keeps its own
/// record whatever comes and goes around it.
fn entry_keys(upstream: &[u8], copy: &Copy) -> Vec<Key> {
    let configured = table::peer_keys(
        upstream,
        copy.entries
            .iter()
            .filter(|e| !e.resolved)
            .map(|e| copy.name(e)),
    );
    let resolved = table::peer_keys_of_parts(
        upstream,
        copy.entries
            .iter()
            .filter(|e| e.resolved)
            .map(|e| [copy.name(e), &b"\0resolve\0"[..], copy.server(e)]),
    );
    let (mut c, mut r) = (configured.into_iter(), resolved.into_iter());
    copy.entries
        .iter()
        .map(|e| {
            if e.resolved {
                r.next().expect("one key per resolved entry")
            } else {
                c.next().expect("one key per configured entry")
            }
        })
        .collect()
}

/// How a change is applied: by the master at a (re)load, or by a worker at run time.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Commit,
    Worker,
}

/// Makes the upstream's peers those of nginx's lists, in the master at a (re)load (after
/// nginx copied the lists into the new zone, with the addresses resolved before the reload).
/// Every peer claims its record as configured peers do (`shm::PeerShared::commit`).
///
/// # Safety
/// In the master (or a single process) from `shell::zone::commit`, before workers start.
pub unsafe fn commit(u: &mut Upstream, main: &MainConf) -> bool {
    // SAFETY: as required by the caller.
    unsafe {
        let d = u.dynamic.as_deref_mut().expect("a resolved upstream");
        d.main = main;
        d.seen = usize::MAX;
        apply(u, Mode::Commit)
    }
}

/// In a new worker: notes where this worker's counters are, starts the poll timer, brings the
/// peers up to date and starts their probes.
///
/// # Safety
/// In a worker, after `shell::zone::worker_start`, with its cycle.
pub unsafe fn worker_start(cycle: *mut ngx_cycle_t, u: *mut Upstream, main: *const MainConf) {
    // SAFETY: the upstream and its configuration live as long as the worker; the timer is
    // leaked on purpose (it lives as long as the worker).
    unsafe {
        let Some(d) = (*u).dynamic.as_deref_mut() else {
            return;
        };
        d.main = main;
        let ev: *mut ngx_event_t = Box::into_raw(Box::new(core::mem::zeroed()));
        (*ev).handler = Some(on_timer);
        (*ev).data = u as *mut c_void;
        (*ev).log = (*cycle).log;
        (*ev).set_cancelable(1);
        d.timer = ev;
        nginx_sys::ngx_add_timer(ev, POLL_MS as _);
        // The peers this worker inherited are the master's, as of the last (re)load; a
        // worker respawned later must not use them (their records may belong to other
        // addresses by now). This also starts the probes (`shell::probe` leaves resolved
        // upstreams to us).
        d.seen = usize::MAX;
        apply(&mut *u, Mode::Worker);
    }
}

/// Once a second: follows changes nobody asked for yet (an idle worker, its probes and status
/// page), and retries addresses that found no room. Also while the worker exits after a
/// reload, so that its last requests never use a record given to another address since (the
/// timer is cancelable: it does not hold the exit up).
unsafe extern "C" fn on_timer(ev: *mut ngx_event_t) {
    // SAFETY: `data` is the upstream whose timer this is (set in `worker_start`).
    unsafe {
        let u = &mut *((*ev).data as *mut Upstream);
        if let Some(d) = u.dynamic.as_deref_mut() {
            if d.retry {
                d.seen = usize::MAX;
            }
        }
        refresh(u);
        nginx_sys::ngx_add_timer(ev, POLL_MS as _);
    }
}

/// Brings the upstream's peers up to date with nginx's lists, if they changed.
///
/// # Safety
/// In a worker, on its event loop, for an upstream with `dynamic`, after `worker_start`.
#[inline]
pub unsafe fn refresh(u: &mut Upstream) {
    // SAFETY: as required by the caller.
    unsafe {
        let Some(d) = u.dynamic.as_deref() else {
            return;
        };
        if d.main.is_null() {
            return;
        }
        let lists_moved = lists_counter(d) != d.seen;
        let added_now = added_counter(&*d.main);
        if !lists_moved && added_now == d.seen_added {
            return;
        }
        if !lists_moved && !added_changed(u) {
            // Another upstream's added peers changed: nothing to rebuild here.
            if let Some(d) = u.dynamic.as_deref_mut() {
                d.seen_added = added_now;
            }
            return;
        }
        apply(u, Mode::Worker);
    }
}

/// Reads nginx's lists and makes them the upstream's peers (see the module's description).
unsafe fn apply(u: &mut Upstream, mode: Mode) -> bool {
    // SAFETY: `apply`'s callers run in the master before the fork or in a worker on its event
    // loop; nginx's lists live in the upstream zone; our table in our zone, whose mutex
    // serialises the claims of all processes (and whose holder's death nginx's master undoes).
    unsafe {
        let slow_ms = u.slow_start.map(|s| s.ms);
        // Records and added peers are filed under the kind's name (an http and a stream
        // upstream may share a name); the log says the name, and the kind for stream.
        let key_name = u.key_name();
        let kind = u.kind.prefix();
        let d = u.dynamic.as_deref_mut().expect("a resolved upstream");
        let main = &*d.main;
        if main.table.is_null() || main.pool.is_null() {
            return false;
        }
        let now = now_ms();
        let cycle_log = main.log();
        let upstream_name = bytes(&u.name);
        let checked = u.check.is_some();
        let default_up = u.check.as_ref().is_none_or(|c| c.conf.default_up);
        let current = &*u.members;

        let mut copy = Copy::default();
        copy.entries.reserve(d.last_entries + 64);
        copy.text.reserve(d.last_text + 4096);
        let seen = read_lists(d, &mut copy);
        let seen_added = if d.max_added > 0 {
            read_added(main, &key_name, &mut copy, &mut d.added)
        } else {
            added_counter(main)
        };
        d.last_entries = copy.entries.len();
        d.last_text = copy.text.len();
        let keys: Vec<Key> = d.keys.keys(&key_name, copy).to_vec();
        let copy = &d.keys.copy;

        // Which entries become peers, which peers stay and which leave.
        let list: Vec<(Key, bool)> = keys
            .iter()
            .zip(&copy.entries)
            .map(|(k, e)| (*k, e.resolved))
            .collect();
        let none = KeyMap::default();
        let index = match (mode, current.index.as_ref()) {
            (Mode::Worker, Some(index)) => index,
            _ => &none,
        };
        let plan = membership::plan(index, &list, d.max_resolved);

        let t = Table::from_header(main.table);
        let generation = main.generation;
        let row = main.row.unwrap_or(t.overflow_row());
        let mut peers: Vec<Peer> = Vec::with_capacity(copy.entries.len());
        // Each new peer's index in the current snapshot, if it stays.
        let mut origin: Vec<Option<usize>> = Vec::with_capacity(copy.entries.len());
        let mut joined: Vec<(usize, bool)> = Vec::new();
        // Current peers whose record went to another address meanwhile (a worker that
        // lagged, or a respawned one starting from the master's older list): dropped here
        // without a release, and joined again with the record their key has now.
        let mut lost: Vec<Peer> = Vec::new();
        let mut full = 0;
        let mut private = 0;
        ngx_shmtx_lock(ptr::addr_of_mut!((*main.pool).mutex));
        for (i, e) in copy.entries.iter().enumerate() {
            let key = keys[i];
            match plan.actions[i] {
                Action::Ignore => continue,
                // (A peer with a record private to this worker keeps it: there was no room
                // for it in the zone, and taking another private one would reset its state.)
                Action::Keep(j)
                    if current.peers[j].record().is_none()
                        || (*current.peers[j].shared).key() == key =>
                {
                    let mut p = current.peers[j].clone();
                    p.conf_weight = e.weight;
                    p.weight = (*p.shared).weight_override().unwrap_or(e.weight);
                    p.limits = e.limits;
                    p.down = e.down;
                    p.backup = e.backup;
                    peers.push(p);
                    origin.push(Some(j));
                    continue;
                }
                Action::Keep(j) => lost.push(current.peers[j].clone()),
                Action::Join => {}
            }
            let claimed = t.claim(key, generation, now);
            let (record, active, index, admitted): (&PeerShared, &AtomicU32, Option<usize>, bool) =
                match claimed {
                    Some(c) => {
                        let record = &t.records[c.index()];
                        let fresh = matches!(c, Claim::Fresh(_));
                        let admitted = match mode {
                            Mode::Commit => {
                                record.commit(
                                    generation,
                                    fresh,
                                    checked,
                                    default_up,
                                    checked && !e.down,
                                );
                                record.configured_as(line_fingerprint(
                                    e.weight, &e.limits, e.backup, e.down,
                                ));
                                false
                            }
                            Mode::Worker => {
                                if e.added {
                                    // Its definition is its `server` line: a change to the
                                    // peer saved in `lb_state` is matched against it.
                                    record.configured_as(line_fingerprint(
                                        e.weight, &e.limits, e.backup, e.down,
                                    ));
                                }
                                record.join(generation, fresh, checked, default_up)
                            }
                        };
                        (record, t.counter(row, c.index()), Some(c.index()), admitted)
                    }
                    None if !e.resolved => {
                        private += 1;
                        let (record, active) =
                            crate::shell::zone::private_record(default_up || !checked);
                        (record, active, None, false)
                    }
                    None => {
                        full += 1;
                        continue;
                    }
                };
            // A peer that joins peers already serving ramps up (`lb_slow_start`); the first
            // peers of an upstream (at a start) do not: they are all cold alike.
            if admitted && !current.peers.is_empty() {
                record.start_ramp(now);
            }
            let mut p = Peer {
                // SAFETY: the copy's sockaddr holds `e.socklen` bytes.
                addr: Addr::owned(OwnedAddr::new(
                    ptr::addr_of!(e.sockaddr) as *const sockaddr,
                    e.socklen,
                    copy.name(e),
                    copy.server(e),
                )),
                weight: record.weight_override().unwrap_or(e.weight),
                conf_weight: e.weight,
                limits: e.limits,
                down: e.down,
                backup: e.backup,
                shared: record,
                record: u32::MAX,
                key,
                active,
                slot: 0,
                resolved: e.resolved,
                added: e.added,
                ramp: slow_ms.map_or(1, |ms| {
                    crate::balance::slow_start::step(record.ramp_start(), now, ms)
                }),
            };
            p.set_record(index);
            joined.push((peers.len(), admitted));
            peers.push(p);
            origin.push(None);
        }
        // Records of peers that left are released, if they still carry the peer's key (not in
        // commit mode: there the old configuration's peers simply go stale with their
        // generation). Only the worker whose release took effect says so (once per address).
        let left: Vec<(Peer, bool)> = plan
            .left
            .iter()
            .map(|&j| {
                let p = current.peers[j].clone();
                let announce = (*p.shared).key() == p.key && (*p.shared).release_membership(now);
                (p, announce)
            })
            .collect();
        ngx_shmtx_unlock(ptr::addr_of_mut!((*main.pool).mutex));

        // This worker's own state.
        if mode == Mode::Commit {
            d.slots.clear();
            d.free_slots.clear();
        }
        for p in left.iter().map(|(p, _)| p).chain(&lost) {
            if let Some(Some(probe)) = d.probes.remove(&p.key) {
                probe::retire(probe);
            }
            if let Some(k) = u.keepalive.as_deref_mut() {
                k.clear(p.slot());
            }
            if let Some(s) = u.sessions.get_mut().get(p.slot()) {
                let old = s.replace(ptr::null_mut());
                #[cfg(ngx_feature = "http_ssl")]
                if !old.is_null() {
                    nginx_sys::SSL_SESSION_free(old as *mut nginx_sys::SSL_SESSION);
                }
                #[cfg(not(ngx_feature = "http_ssl"))]
                let _ = old;
            }
            if d.slots.get(p.slot()).copied().flatten() == Some(p.key) {
                d.slots[p.slot()] = None;
                d.free_slots.push(p.slot());
            }
        }
        for &(i, admitted) in &joined {
            let key = peers[i].key;
            let slot = d.take_slot(key);
            peers[i].set_slot(slot);
            if admitted {
                ngx::ngx_log_error!(
                    NGX_LOG_NOTICE,
                    cycle_log,
                    "lb: {}upstream \"{}\": peer {} ({}) joined",
                    kind,
                    upstream_name.escape_ascii(),
                    bytes(peers[i].name()).escape_ascii(),
                    bytes(peers[i].server()).escape_ascii()
                );
            }
        }
        for (p, _) in left.iter().filter(|(_, announce)| *announce) {
            ngx::ngx_log_error!(
                NGX_LOG_NOTICE,
                cycle_log,
                "lb: {}upstream \"{}\": peer {} ({}) left",
                kind,
                upstream_name.escape_ascii(),
                bytes(p.name()).escape_ascii(),
                bytes(p.server()).escape_ascii()
            );
        }
        if private > 0 {
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                cycle_log,
                "lb: {}upstream \"{}\": no room in zone \"ngx_http_lb\" for {} configured peer(s); \
                 their state is private to each worker until a reload finds room",
                kind,
                upstream_name.escape_ascii(),
                private
            );
        }
        let ignored = plan.ignored + full;
        if ignored > 0 && ignored != d.ignored {
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                cycle_log,
                "lb: {}upstream \"{}\": {} resolved address(es) ignored ({} over max_resolved={}, \
                 {} for lack of room in zone \"ngx_http_lb\")",
                kind,
                upstream_name.escape_ascii(),
                ignored,
                plan.ignored,
                d.max_resolved,
                full
            );
        }
        d.ignored = ignored;
        d.seen = seen;
        d.seen_added = seen_added;
        // Addresses left out for lack of room are tried again from the timer (records of
        // addresses that left become free in time; nginx's counter does not move for that).
        d.retry = full > 0;

        // Primaries first, then backups: nginx's lists come in that order (the primary list,
        // then the backup list), so the sort only checks it.
        let primaries = peers.iter().filter(|p| !p.backup).count();
        if !peers.is_sorted_by_key(|p| p.backup) {
            let mut both: Vec<(Peer, Option<usize>)> = peers.into_iter().zip(origin).collect();
            both.sort_by_key(|(p, _)| p.backup);
            (peers, origin) = both.into_iter().unzip();
        }
        // Selection state follows the change (O(period) for round-robin schedules instead of
        // a rebuild), unless most of it is new anyway.
        let mut m = if mode == Mode::Commit || joined.len() * 2 > peers.len() {
            Members::new(u.method, peers, primaries, true)
        } else {
            Members::follow(u.method, peers, primaries, current, &origin)
        };
        m.reseed(d.seed ^ seen as u64);
        let new_peers: Vec<(Key, bool)> = if checked && mode == Mode::Worker {
            joined_keys(&m, &d.probes)
        } else {
            Vec::new()
        };
        u.replace_members(m);
        // Probes for peers that have none (joined, or all of them at a worker's start).
        if !new_peers.is_empty() {
            let setup: *const crate::shell::check::CheckSetup =
                u.check.as_deref().expect("checked");
            let cycle = nginx_sys::ngx_cycle as *mut ngx_cycle_t;
            let up: *const Upstream = u;
            let m = &*u.members;
            for (key, down) in new_peers {
                if down {
                    continue;
                }
                let j = m.index.as_ref().and_then(|x| x.get(&key)).copied();
                if let Some(j) = j {
                    let probe = probe::start_probe(cycle, up, &m.peers[j], &*setup);
                    if let Some(d) = u.dynamic.as_deref_mut() {
                        d.probes.insert(key, probe);
                    }
                }
            }
        }
        true
    }
}

/// The peers of `m` that have no probe yet, with whether they are `down`.
fn joined_keys(m: &Members, probes: &KeyMap<Option<probe::Handle>>) -> Vec<(Key, bool)> {
    m.peers
        .iter()
        .filter(|p| !probes.contains_key(&p.key))
        .map(|p| (p.key, p.down))
        .collect()
}
