//! `server NAME resolve` (nginx 1.27.3+): peers that follow DNS at run time.
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
use std::collections::HashMap;
use std::rc::Rc;

use nginx_sys::{
    ngx_cycle_t, ngx_event_t, ngx_http_upstream_rr_peer_t, ngx_http_upstream_rr_peers_t,
    ngx_http_upstream_srv_conf_t, ngx_rwlock_rlock, ngx_rwlock_unlock, ngx_shmtx_lock,
    ngx_shmtx_unlock, ngx_sockaddr_t, ngx_str_t, sockaddr, NGX_LOG_NOTICE, NGX_LOG_WARN,
};

use crate::balance::membership::{self, Action};
use crate::balance::Limits;
use crate::shell::conf::MainConf;
use crate::shell::nginx::{bytes, now_ms};
use crate::shell::probe::{self, Probe};
use crate::shell::table::{Key, Members, OwnedAddr, Peer, Upstream};
use crate::shm::table::{self, claim, Claim, Table};

/// How often an idle worker looks for changes, ms.
const POLL_MS: u64 = 1000;

/// Addresses the names of one upstream may have at once, unless `lb_upstream max_resolved=`
/// says otherwise.
pub const DEFAULT_MAX_RESOLVED: usize = 128;

/// How one worker follows the resolved peers of one upstream.
pub struct Dynamic {
    us: *mut ngx_http_upstream_srv_conf_t,
    /// `server ... resolve` lines.
    pub servers: usize,
    /// The value of nginx's change counter that the current peers reflect.
    seen: usize,
    /// Resolved addresses kept at most; the rest are ignored with a warning.
    pub max_resolved: usize,
    /// This worker's seed for p2c's random sequences.
    pub seed: u64,
    /// The key of the peer each slot belongs to, `None` for a free slot.
    slots: Vec<Option<Key>>,
    free_slots: Vec<usize>,
    /// This worker's probes, by peer key.
    pub probes: HashMap<Key, *mut Probe>,
    /// The addresses ignored at the last change (to warn once per change).
    ignored: usize,
    /// The zone: table, its mutex, generation and this worker's row of counters.
    main: *const MainConf,
    timer: *mut ngx_event_t,
}

impl Dynamic {
    /// `servers`: the upstream's `server ... resolve` lines.
    pub fn new(
        us: *mut ngx_http_upstream_srv_conf_t,
        servers: usize,
        max_resolved: usize,
    ) -> Dynamic {
        Dynamic {
            us,
            servers,
            seen: usize::MAX,
            max_resolved,
            seed: 1,
            slots: Vec::new(),
            free_slots: Vec::new(),
            probes: HashMap::new(),
            ignored: 0,
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

/// Whether nginx keeps servers with `resolve` in these (configuration-time) lists.
///
/// # Safety
/// `rr` is the peer lists `ngx_http_upstream_init_round_robin` built.
pub unsafe fn has_resolve(rr: *const ngx_http_upstream_rr_peers_t) -> bool {
    // SAFETY: as required by the caller.
    unsafe {
        !(*rr).resolve.is_null() || (!(*rr).next.is_null() && !(*(*rr).next).resolve.is_null())
    }
}

/// How many `server ... resolve` lines the lists hold.
///
/// # Safety
/// As for `has_resolve`.
pub unsafe fn resolve_servers(rr: *const ngx_http_upstream_rr_peers_t) -> usize {
    let mut n = 0;
    let mut list = rr;
    // SAFETY: as required by the caller.
    unsafe {
        while !list.is_null() {
            let mut p = (*list).resolve;
            while !p.is_null() {
                n += 1;
                p = (*p).next;
            }
            list = (*list).next;
        }
    }
    n
}

/// One peer as read from nginx's shared list.
struct Entry {
    sockaddr: ngx_sockaddr_t,
    socklen: nginx_sys::socklen_t,
    name: Box<[u8]>,
    server: Box<[u8]>,
    weight: u32,
    limits: Limits,
    down: bool,
    backup: bool,
    resolved: bool,
}

/// nginx's lists of the upstream now (`us->peer.data`: the zone's copy once the zone is set up).
unsafe fn lists(d: &Dynamic) -> *mut ngx_http_upstream_rr_peers_t {
    // SAFETY: `us` is the upstream's configuration, alive for the cycle.
    unsafe { (*d.us).peer.data as *mut ngx_http_upstream_rr_peers_t }
}

/// nginx's change counter of the lists.
unsafe fn config_counter(rr: *const ngx_http_upstream_rr_peers_t) -> usize {
    // SAFETY: `config` points to a word in the upstream zone, written under the lists' write
    // lock; a plain aligned load sees either the old or the new value, and a changed value is
    // followed by a read under the lock.
    unsafe {
        let c = (*rr).config;
        if c.is_null() {
            0
        } else {
            ptr::read_volatile(c) as usize
        }
    }
}

/// Copies one list's peers.
///
/// # Safety
/// The list's read lock is held.
unsafe fn read_list(list: *const ngx_http_upstream_rr_peers_t, backup: bool, out: &mut Vec<Entry>) {
    // SAFETY: as required by the caller; nginx's strings and addresses are valid while the
    // lock is held.
    unsafe {
        let mut p: *const ngx_http_upstream_rr_peer_t = (*list).peer;
        while !p.is_null() {
            let mut sa: ngx_sockaddr_t = core::mem::zeroed();
            let len = ((*p).socklen as usize).min(core::mem::size_of::<ngx_sockaddr_t>());
            ptr::copy_nonoverlapping(
                (*p).sockaddr as *const u8,
                ptr::addr_of_mut!(sa) as *mut u8,
                len,
            );
            out.push(Entry {
                sockaddr: sa,
                socklen: len as _,
                name: bytes(&(*p).name).into(),
                server: bytes(&(*p).server).into(),
                weight: (*p).weight.clamp(1, u32::MAX as _) as u32,
                limits: Limits {
                    max_fails: (*p).max_fails.min(u32::MAX as _) as u32,
                    fail_timeout_ms: ((*p).fail_timeout.max(0) as u64).saturating_mul(1000),
                    max_conns: (*p).max_conns.min(u32::MAX as _) as u32,
                },
                down: (*p).down != 0,
                backup,
                resolved: !(*p).host.is_null(),
            });
            p = (*p).next;
        }
    }
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

/// In a new worker: notes where this worker's counters are and starts the poll timer.
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
    }
}

unsafe extern "C" fn on_timer(ev: *mut ngx_event_t) {
    if crate::shell::nginx::exiting() {
        return;
    }
    // SAFETY: `data` is the upstream whose timer this is (set in `worker_start`).
    unsafe {
        let u = &mut *((*ev).data as *mut Upstream);
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
        if d.main.is_null() || config_counter(lists(d)) == d.seen {
            return;
        }
        apply(u, Mode::Worker);
    }
}

/// Reads nginx's lists and makes them the upstream's peers (see the module's description).
unsafe fn apply(u: &mut Upstream, mode: Mode) -> bool {
    // SAFETY: `apply`'s callers run in the master before the fork or in a worker on its event
    // loop; nginx's lists live in the upstream zone; our table in our zone, whose mutex
    // serialises claims between processes.
    unsafe {
        let d = u.dynamic.as_deref_mut().expect("a resolved upstream");
        let main = &*d.main;
        if main.table.is_null() || main.pool.is_null() {
            return false;
        }
        let rr = lists(d);
        let backup_list = (*rr).next;
        let now = now_ms();
        let cycle_log = (*nginx_sys::ngx_cycle).log;
        let upstream_name = bytes(&u.name);
        let checked = u.check.is_some();
        let default_up = u.check.as_ref().is_none_or(|c| c.conf.default_up);
        let current = &*u.members;

        // Under nginx's read locks: copy the lists, and claim or release records, so that
        // our view of who is a member changes in the same order as nginx's lists do.
        ngx_rwlock_rlock(ptr::addr_of_mut!((*rr).rwlock));
        if !backup_list.is_null() {
            ngx_rwlock_rlock(ptr::addr_of_mut!((*backup_list).rwlock));
        }
        let seen = config_counter(rr);
        let mut entries = Vec::new();
        read_list(rr, false, &mut entries);
        if !backup_list.is_null() {
            read_list(backup_list, true, &mut entries);
        }
        let keys = table::peer_keys(upstream_name, entries.iter().map(|e| &*e.name));

        // Which entries become peers, which peers stay and which leave.
        let list: Vec<(Key, bool)> = keys
            .iter()
            .zip(&entries)
            .map(|(k, e)| (*k, e.resolved))
            .collect();
        let none = HashMap::new();
        let index = match (mode, current.index.as_ref()) {
            (Mode::Worker, Some(index)) => index,
            _ => &none,
        };
        let plan = membership::plan(index, &list, d.max_resolved);
        let ignored = plan.ignored;

        let t = Table::from_header(main.table);
        let generation = main.generation;
        let mut peers: Vec<Peer> = Vec::with_capacity(entries.len());
        let mut joined: Vec<(usize, bool)> = Vec::new();
        let mut full = 0;
        ngx_shmtx_lock(ptr::addr_of_mut!((*main.pool).mutex));
        for (i, e) in entries.iter().enumerate() {
            let key = keys[i];
            match plan.actions[i] {
                Action::Ignore => continue,
                Action::Keep(j) => {
                    let mut p = current.peers[j].clone();
                    p.weight = e.weight;
                    p.limits = e.limits;
                    p.down = e.down;
                    p.backup = e.backup;
                    peers.push(p);
                    continue;
                }
                Action::Join => {}
            }
            let Some(c) = claim(t.records, key, generation, now) else {
                full += 1;
                continue;
            };
            let record = &t.records[c.index()];
            let fresh = matches!(c, Claim::Fresh(_));
            let admitted = match mode {
                Mode::Commit => {
                    record.commit(generation, fresh, checked, default_up, checked && !e.down);
                    false
                }
                Mode::Worker => record.join(generation, fresh, checked, default_up),
            };
            let owned = Rc::new(OwnedAddr {
                sockaddr: e.sockaddr,
                name: e.name.clone(),
                server: e.server.clone(),
            });
            let row = main.row.unwrap_or(t.overflow_row());
            let p = Peer {
                sockaddr: ptr::addr_of!(owned.sockaddr) as *mut sockaddr,
                socklen: e.socklen,
                name: ngx_str_t {
                    len: owned.name.len(),
                    data: owned.name.as_ptr() as *mut u8,
                },
                server: ngx_str_t {
                    len: owned.server.len(),
                    data: owned.server.as_ptr() as *mut u8,
                },
                weight: e.weight,
                limits: e.limits,
                down: e.down,
                backup: e.backup,
                shared: record,
                record: c.index(),
                key,
                active: t.counter(row, c.index()),
                slot: 0,
                resolved: e.resolved,
                owned: Some(owned.clone()),
            };
            joined.push((peers.len(), admitted));
            peers.push(p);
        }
        // Records of peers that left: released (not in commit mode: there the old
        // configuration's peers simply go stale with their generation).
        let left: Vec<Peer> = plan
            .left
            .iter()
            .map(|&j| current.peers[j].clone())
            .collect();
        // Only the worker whose release took effect says so (once per address).
        let announce: Vec<bool> = left
            .iter()
            .map(|p| (*p.shared).release_membership(now))
            .collect();
        ngx_shmtx_unlock(ptr::addr_of_mut!((*main.pool).mutex));
        if !backup_list.is_null() {
            ngx_rwlock_unlock(ptr::addr_of_mut!((*backup_list).rwlock));
        }
        ngx_rwlock_unlock(ptr::addr_of_mut!((*rr).rwlock));

        // Outside the locks: this worker's own state.
        if mode == Mode::Commit {
            d.slots.clear();
            d.free_slots.clear();
        }
        for p in &left {
            if let Some(probe) = d.probes.remove(&p.key) {
                probe::retire(probe);
            }
            if let Some(k) = u.keepalive.as_deref_mut() {
                k.clear(p.slot);
            }
            if let Some(s) = u.sessions.get(p.slot) {
                let old = s.replace(ptr::null_mut());
                if !old.is_null() {
                    #[cfg(ngx_feature = "http_ssl")]
                    nginx_sys::SSL_SESSION_free(old as *mut nginx_sys::SSL_SESSION);
                }
            }
            if d.slots.get(p.slot).copied().flatten() == Some(p.key) {
                d.slots[p.slot] = None;
                d.free_slots.push(p.slot);
            }
        }
        for &(i, admitted) in &joined {
            let key = peers[i].key;
            let slot = d.take_slot(key);
            peers[i].slot = slot;
            if let Some(k) = u.keepalive.as_deref_mut() {
                k.ensure(slot);
            }
            while u.sessions.len() <= slot {
                u.sessions.push(core::cell::Cell::new(ptr::null_mut()));
            }
            if admitted {
                ngx::ngx_log_error!(
                    NGX_LOG_NOTICE,
                    cycle_log,
                    "lb: upstream \"{}\": peer {} ({}) joined",
                    upstream_name.escape_ascii(),
                    bytes(&peers[i].name).escape_ascii(),
                    bytes(&peers[i].server).escape_ascii()
                );
            }
        }
        if mode == Mode::Worker {
            for (p, _) in left.iter().zip(&announce).filter(|(_, a)| **a) {
                ngx::ngx_log_error!(
                    NGX_LOG_NOTICE,
                    cycle_log,
                    "lb: upstream \"{}\": peer {} ({}) left",
                    upstream_name.escape_ascii(),
                    bytes(&p.name).escape_ascii(),
                    bytes(&p.server).escape_ascii()
                );
            }
        }
        if ignored + full > 0 && ignored + full != d.ignored {
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                cycle_log,
                "lb: upstream \"{}\": {} resolved address(es) ignored ({} over max_resolved={}, \
                 {} for lack of room in zone \"ngx_http_lb\")",
                upstream_name.escape_ascii(),
                ignored + full,
                ignored,
                d.max_resolved,
                full
            );
        }
        d.ignored = ignored + full;
        d.seen = seen;

        // Primaries first, then backups (nginx's lists are in that order already).
        let primaries = peers.iter().filter(|p| !p.backup).count();
        peers.sort_by_key(|p| p.backup);
        let mut m = Members::new(u.method, peers, primaries, true);
        m.reseed(d.seed ^ seen as u64);
        let new_peers: Vec<(Key, bool)> = if checked && mode == Mode::Worker {
            joined_keys(&m, &d.probes)
        } else {
            Vec::new()
        };
        u.replace_members(m);
        // Probes for peers that joined (at a commit, workers start them at their start).
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
fn joined_keys(m: &Members, probes: &HashMap<Key, *mut Probe>) -> Vec<(Key, bool)> {
    m.peers
        .iter()
        .filter(|p| !probes.contains_key(&p.key))
        .map(|p| (p.key, p.down))
        .collect()
}
