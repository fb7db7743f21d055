//! The shared zone: created from the configuration (sized from the number of peers and of
//! worker processes), found or made when nginx maps it, and handed to the peers only once the
//! new configuration is committed.
//!
//! nginx hands a zone of the same name and size over to the next configuration on reload, with
//! its contents; we then keep the table (after checking its layout) and look peers up by
//! upstream name and address, so their state carries over. A zone of another size starts empty.
//!
//! Two steps, because nginx maps zones (and calls `init_zone`) before it opens the new
//! configuration's listening sockets, and a reload can still fail after that: `init_zone` only
//! finds or makes the table and checks that the peers will fit, changing nothing the running
//! workers see; `commit` (from the module's `init_module`, which nginx calls once the new
//! configuration can no longer fail) bumps the generation and hands out the records.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::AtomicU32;

use nginx_sys::{
    ngx_conf_t, ngx_core_conf_t, ngx_core_module, ngx_int_t, ngx_ncpu, ngx_shared_memory_add,
    ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock, ngx_slab_alloc, ngx_slab_pool_t, ngx_str_t,
    ngx_uint_t, NGX_LOG_EMERG,
};

use crate::shell::conf::{log_plain, MainConf};
use crate::shell::nginx::bytes;
use crate::shell::table::Upstream;
use crate::shm::table::{
    self, added_capacity_for, capacity_for, fits, header_matches, init_header, slots_for,
    table_bytes, Claim, Header, Table,
};
use crate::shm::PeerShared;

/// The zone's name, as `nginx -T` and error messages show it.
const ZONE_NAME: &str = "ngx_http_lb";

/// Adds (or finds again, on reload) the zone for the upstreams in `main`.
///
/// # Safety
/// `cf` must be the configuration being processed and `main` its main conf.
pub unsafe fn add(cf: *mut ngx_conf_t, main: &mut MainConf) -> ngx_int_t {
    let peers: usize = main
        .upstreams
        .iter()
        // SAFETY: the tables were allocated from the configuration pool by `init_upstream`.
        .map(|&u| unsafe { records_wanted(&*u) })
        .sum();
    let capacity = capacity_for(peers);
    // SAFETY: the core module's configuration exists once the main context is parsed;
    // `worker_processes` may still be unset (the directive can follow `http {}`): then the
    // number of CPUs, which is what `auto` would give.
    let workers = unsafe {
        let ctx = (*(*cf).cycle).conf_ctx;
        let ccf = *ctx.add((*ptr::addr_of!(ngx_core_module)).index) as *const ngx_core_conf_t;
        let configured = if ccf.is_null() {
            -1
        } else {
            (*ccf).worker_processes
        };
        if configured > 0 {
            configured as usize
        } else {
            ngx_ncpu.max(1) as usize
        }
    };
    main.slots = slots_for(workers);
    // SAFETY: as above.
    let added = unsafe { added_wanted(main) };
    let bytes_needed = table_bytes(capacity, main.slots, added);
    let size = table::zone_bytes(bytes_needed);
    if !main.zone.is_null() {
        // A second block (`stream {}` after `http {}`, or the reverse) brought upstreams: the
        // zone declared by the first grows to hold them too (nginx maps zones only once every
        // block is parsed).
        // SAFETY: the zone was declared for this cycle by the first call.
        unsafe { (*main.zone).shm.size = size };
        return crate::shell::nginx::OK;
    }
    let mut name = ngx_str_t {
        len: ZONE_NAME.len(),
        data: ZONE_NAME.as_ptr() as *mut u8,
    };
    // SAFETY: nginx copies nothing but keeps `name.data`, which points to static memory; the
    // tag is our module's address, unique to us.
    unsafe {
        let zone = ngx_shared_memory_add(
            cf,
            &mut name,
            size,
            ptr::addr_of_mut!(crate::ngx_http_lb_module) as *mut c_void,
        );
        if zone.is_null() {
            return crate::shell::nginx::ERROR;
        }
        (*zone).init = Some(init_zone);
        (*zone).data = main as *mut MainConf as *mut c_void;
        main.zone = zone;
        // Remembered for the error message in `init_zone`.
        ZONE_LOG_CF = cf;
    }
    crate::shell::nginx::OK
}

// Only used to word an error while the configuration is loaded (single-threaded).
static mut ZONE_LOG_CF: *mut ngx_conf_t = ptr::null_mut();

/// The records' keys of every configured peer of `u`, in the table's order.
///
/// # Safety
/// `u`'s names are nginx strings from the configuration pool.
unsafe fn keys_of(u: &Upstream) -> Vec<(u64, u64)> {
    // SAFETY: as required by the caller.
    unsafe {
        table::peer_keys(
            &u.key_name(),
            u.current().peers.iter().map(|p| bytes(p.name())),
        )
    }
}

/// Records an upstream may need at once: its configured peers, plus room for the addresses
/// of its resolved names and for the peers `lb_api` may add.
fn records_wanted(u: &Upstream) -> usize {
    u.current().peers.len()
        + u.dynamic.as_ref().map_or(0, |d| {
            if d.servers > 0 {
                d.max_resolved + d.max_added
            } else {
                d.max_added
            }
        })
}

/// Entries for added peers the table needs.
///
/// # Safety
/// The tables of `main` are alive.
unsafe fn added_wanted(main: &MainConf) -> u32 {
    let n: usize = main
        .upstreams
        .iter()
        // SAFETY: as required by the caller.
        .map(|&u| unsafe { &*u }.dynamic.as_ref().map_or(0, |d| d.max_added))
        .sum();
    added_capacity_for(n)
}

/// nginx's zone init hook: `old` is non-null when the zone is handed over from the previous
/// configuration. Finds or makes the table and checks that every peer will find a record;
/// changes nothing in a table that running workers use.
unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls this in the master, before forking workers, with the zone mapped;
    // the slab pool sits at the start of the zone; `data` is the MainConf we set in `add`.
    unsafe {
        let pool = (*zone).shm.addr as *mut ngx_slab_pool_t;
        let main = &mut *((*zone).data as *mut MainConf);
        let peers: usize = main.upstreams.iter().map(|&u| records_wanted(&*u)).sum();
        let capacity = capacity_for(peers);
        let slots = main.slots;
        let added = added_wanted(main);
        let bytes_needed = table_bytes(capacity, slots, added);

        let mut header = (*pool).data as *mut Header;
        let reuse =
            !old.is_null() && !header.is_null() && header_matches(&*header, capacity, slots, added);
        if !reuse && !old.is_null() {
            let cf = ZONE_LOG_CF;
            if !cf.is_null() {
                log_plain(
                    cf,
                    nginx_sys::NGX_LOG_WARN as ngx_uint_t,
                    &format!(
                        "lb: zone \"{ZONE_NAME}\" is laid out anew (the number of peers or of \
                         worker processes changed): health, counters and lb_api changes start \
                         afresh (lb_api changes come back from lb_state, if set)"
                    ),
                );
            }
        }
        if !reuse {
            // A new table: in a new zone, or beside the old one in a zone of the same size
            // whose layout changed; nobody uses it before `commit`.
            header = ngx_slab_alloc(pool, bytes_needed) as *mut Header;
            if header.is_null() {
                return fail(&format!(
                    "lb: cannot allocate {bytes_needed} bytes for {capacity} peer records in \
                     zone \"{ZONE_NAME}\""
                ));
            }
            if !old.is_null() || *(header as *const u64) != 0 {
                // Memory of the old zone, used before (or junk-filled by a slab allocator
                // built with NGX_DEBUG_MALLOC). A new zone is a fresh anonymous shared
                // mapping, zeroed by the kernel: writing zeros to it would only make every
                // page of records resident in every process, used or not.
                ptr::write_bytes(header as *mut u8, 0, bytes_needed);
            }
            init_header(&mut *header, capacity, slots, added);
            (*pool).data = header as *mut c_void;
        }
        let generation = next_generation((*header).generation);
        let records = Table::from_header(header).records;
        // Each peer keeps its key for `commit` (computed once per load).
        let mut keys: Vec<(u64, u64)> = Vec::new();
        for &u in &main.upstreams {
            let mine = keys_of(&*u);
            for (p, key) in (*u).current_mut().peers.iter_mut().zip(&mine) {
                p.key = *key;
            }
            keys.extend(mine);
        }
        if !fits(records, &keys, generation, crate::shell::nginx::now_ms()) {
            return fail(&format!(
                "lb: no free peer record in zone \"{ZONE_NAME}\" ({capacity} records)"
            ));
        }
        main.table = header;
        main.pool = pool;
        main.fresh_table = !reuse;
    }
    crate::shell::nginx::OK
}

/// A record for a configured peer that found no room in the zone (taken by resolved
/// addresses between `init_zone`'s check and the commit): private to each worker (leaked: it
/// lives as long as the process), so the peer works; only its state is not shared.
pub fn private_record(default_up: bool) -> (&'static PeerShared, &'static AtomicU32) {
    let record: &'static PeerShared = Box::leak(Box::default());
    record.reset_state(default_up);
    (record, Box::leak(Box::new(AtomicU32::new(0))))
}

fn next_generation(g: u32) -> u32 {
    g.wrapping_add(1).max(1)
}

/// Hands every configured peer its record, once nginx has committed the configuration (from
/// `init_module`). A new peer starts in `lb_check`'s `default=` state, and so does a peer that
/// was not health-checked in the previous configuration (it was `down`, not configured, or
/// the upstream had no checks): its old state says nothing about it now. A peer that was
/// checked keeps its health; a peer whose upstream no longer has checks is up.
///
/// # Safety
/// `main` is the committed configuration's main conf, in the master (or a single process),
/// before any worker of it exists.
pub unsafe fn commit(main: &mut MainConf) -> ngx_int_t {
    if main.table.is_null() {
        return crate::shell::nginx::OK;
    }
    // SAFETY: `init_zone` checked the table; it stays mapped for the life of the process.
    unsafe {
        let header = main.table;
        (*header).generation = next_generation((*header).generation);
        let generation = (*header).generation;
        main.generation = generation;
        let table = Table::from_header(header);
        let records = table.records;
        let now = crate::shell::nginx::now_ms();
        // Configured peers first: `init_zone` counted room for them; resolved addresses
        // (claimed at run time by the previous configuration's workers too) come after.
        for &u in &main.upstreams {
            let u = &mut *u;
            if u.dynamic.is_some() {
                continue;
            }
            let default_up = u.check.as_ref().is_none_or(|c| c.conf.default_up);
            let checked = u.check.is_some();
            let mut private = 0;
            for p in u.current_mut().peers.iter_mut() {
                // Set by `init_zone` for this configuration.
                let key = p.key;
                // Workers of the previous configuration may be claiming records for resolved
                // addresses meanwhile.
                ngx_shmtx_lock(ptr::addr_of_mut!((*main.pool).mutex));
                let c = table.claim(key, generation, now);
                ngx_shmtx_unlock(ptr::addr_of_mut!((*main.pool).mutex));
                let Some(c) = c else {
                    // Taken since `init_zone` checked: the peer works with a record of its
                    // own in each worker (never a configuration that fails every request).
                    let (record, active) = private_record(default_up || !checked);
                    p.shared = record;
                    p.set_record(None);
                    p.active = active;
                    private += 1;
                    continue;
                };
                let record = &records[c.index()];
                record.commit(
                    generation,
                    matches!(c, Claim::Fresh(_)),
                    checked,
                    default_up,
                    checked && !p.down,
                );
                record.configured_as(p.fingerprint());
                p.weight = record.weight_override().unwrap_or(p.conf_weight);
                p.shared = record;
                p.set_record(Some(c.index()));
                p.active = table.counter(table.overflow_row(), c.index());
            }
            if private > 0 {
                ngx::ngx_log_error!(
                    nginx_sys::NGX_LOG_WARN,
                    main.log(),
                    "lb: {}upstream \"{}\": no room in zone \"{}\" for {} peer(s); their state is \
                     private to each worker until a reload finds room",
                    u.kind.prefix(),
                    bytes(&u.name).escape_ascii(),
                    ZONE_NAME,
                    private
                );
            }
            // Weights an operator set (kept over the reload) take effect.
            let (method, seed) = (u.method, u.seed);
            u.current_mut().reselect(method, seed);
            u.weights = &(*header).weights;
            u.weights_seen = (*header)
                .weights
                .load(core::sync::atomic::Ordering::Relaxed);
            u.set_ready();
        }
        // Added peers: those of a fresh table come from the state file; those of upstreams no
        // longer configured (or no longer with `zone`), and addresses the configuration now
        // has, are dropped.
        let saved = if main.fresh_table {
            crate::shell::api::read_state(main)
        } else {
            None
        };
        let restored = match &saved {
            Some(file) => crate::shell::api::restore_added(main, file),
            None => 0,
        };
        tidy_added(main, &table);
        for &u in &main.upstreams {
            let u = &mut *u;
            // Peers from nginx's lists in the upstream zone, resolved addresses included.
            if u.dynamic.is_some() && crate::shell::resolve::commit(u, main) {
                u.weights = &(*header).weights;
                u.weights_seen = (*header)
                    .weights
                    .load(core::sync::atomic::Ordering::Relaxed);
                u.set_ready();
            }
        }
        // A fresh table (a start, a binary upgrade): operators' changes come back from the
        // state file. (A reload keeps them in the table itself.)
        if let Some(file) = &saved {
            crate::shell::api::restore_changes(main, file, restored);
        }
    }
    crate::shell::nginx::OK
}

/// Per `added::upstream_key` (of the upstream's `key_name`: an http and a stream upstream may
/// share a name): `max_added` and the configured addresses.
pub type AddedTakers<'a> =
    std::collections::HashMap<(u64, u64), (usize, std::collections::HashSet<&'a [u8]>)>;

/// The upstreams that take added peers, by `added::upstream_key`: how many, and the
/// addresses configured in them (before their resolved or added peers join).
///
/// # Safety
/// At the commit, before `resolve::commit` (the upstreams hold their configured peers).
pub unsafe fn added_takers(main: &MainConf) -> AddedTakers<'_> {
    main.upstreams
        .iter()
        // SAFETY: as required by the caller; nginx strings of the configuration's pool.
        .filter_map(|&u| unsafe {
            let u = &*u;
            u.dynamic.as_ref().filter(|d| d.max_added > 0).map(|d| {
                let configured = u
                    .current()
                    .peers
                    .iter()
                    .filter(|p| !p.resolved && !p.added)
                    .map(|p| bytes(p.name()))
                    .collect();
                (
                    crate::shm::added::upstream_key(&u.key_name()),
                    (d.max_added, configured),
                )
            })
        })
        .collect()
}

/// Drops added peers that no upstream of the configuration takes (see `commit`), and says so.
///
/// # Safety
/// From `commit`.
unsafe fn tidy_added(main: &MainConf, table: &Table) {
    // SAFETY: as required by the caller.
    let takers = unsafe { added_takers(main) };
    let mut dropped = 0;
    // SAFETY: the zone's mutex guards the entries.
    unsafe {
        ngx_shmtx_lock(ptr::addr_of_mut!((*main.pool).mutex));
        let entries = table.added();
        for e in entries.iter_mut().filter(|e| !e.is_free()) {
            let keep = takers
                .get(&e.upstream)
                .is_some_and(|(_, configured)| !configured.contains(e.name()));
            if !keep {
                *e = crate::shm::added::free();
                dropped += 1;
            }
        }
        if dropped > 0 {
            (*main.table)
                .added
                .fetch_add(1, core::sync::atomic::Ordering::Release);
        }
        ngx_shmtx_unlock(ptr::addr_of_mut!((*main.pool).mutex));
        if dropped > 0 {
            ngx::ngx_log_error!(
                nginx_sys::NGX_LOG_NOTICE,
                main.log(),
                "lb: {} peer(s) added by lb_api dropped: the configuration has their address \
                 now, or no longer has their upstream (with \"zone\")",
                dropped
            );
        }
    }
}

/// In a new worker: takes a row of per-worker active counters (clearing what a killed
/// predecessor left counted) and points this worker's peers at it. Returns the row.
///
/// # Safety
/// `main` is this process's copy of the configuration, after `commit`.
pub unsafe fn worker_start(main: &mut MainConf, pid: u32) -> Option<usize> {
    if main.table.is_null() {
        return None;
    }
    // SAFETY: the table stays mapped for the life of the process; `kill(pid, 0)` only asks
    // whether a process exists.
    unsafe {
        let table = Table::from_header(main.table);
        let row = table.take_row(pid, |other| {
            libc::kill(other as libc::pid_t, 0) == 0
                || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
        });
        for &u in &main.upstreams {
            for p in &mut (*u).current_mut().peers {
                // (A peer with a private record keeps its private counter.)
                if let (false, Some(record)) = (p.shared.is_null(), p.record()) {
                    p.active = table.counter(row, record);
                }
            }
        }
        main.row = Some(row);
        Some(row)
    }
}

/// A worker exits: its row of counters is free for the next worker.
///
/// # Safety
/// As for `worker_start`.
pub unsafe fn worker_exit(main: &MainConf, pid: u32) {
    if let (false, Some(row)) = (main.table.is_null(), main.row) {
        // SAFETY: as in `worker_start`.
        unsafe { Table::from_header(main.table) }.release_row(row, pid);
    }
}

unsafe fn fail(msg: &str) -> ngx_int_t {
    // SAFETY: set in `add` for the configuration now being loaded.
    unsafe {
        let cf = ZONE_LOG_CF;
        if !cf.is_null() {
            log_plain(cf, NGX_LOG_EMERG as ngx_uint_t, msg);
        }
    }
    crate::shell::nginx::ERROR
}
