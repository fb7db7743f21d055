//! The shared zone: created from the configuration (sized from the number of peers), and
//! initialised by the master, which hands every configured peer its record before the workers
//! are forked.
//!
//! nginx hands a zone of the same name and size over to the next configuration on reload, with
//! its contents; we then keep the table (after checking its layout) and look peers up by
//! upstream name and address, so their state carries over. A zone of another size starts empty.

use core::ffi::c_void;
use core::ptr;

use nginx_sys::{
    ngx_conf_t, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_slab_alloc, ngx_slab_pool_t,
    ngx_str_t, ngx_uint_t, NGX_LOG_EMERG,
};

use super::peer::PeerShared;
use super::table::{
    self, capacity_for, claim, header_matches, init_header, table_bytes, Claim, Header,
};
use crate::health::state::Health;
use crate::nginx::bytes;
use crate::upstream::directive::{log_plain, MainConf};
use core::sync::atomic::Ordering::Relaxed;

/// The configuration generation of the zone's table, set by the master when it loads a
/// configuration; workers inherit it and pick their active-counter slots with it.
pub static GENERATION: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

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
        .map(|&u| unsafe { (*u).peers.len() })
        .sum();
    let capacity = capacity_for(peers);
    // Room for the slab allocator's own bookkeeping besides our table.
    let size =
        (table_bytes(capacity) + table_bytes(capacity) / 8 + 64 * 1024).next_multiple_of(4096);
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
            ptr::addr_of_mut!(crate::upstream::ngx_http_lb_module) as *mut c_void,
        );
        if zone.is_null() {
            return nginx_sys::NGX_ERROR as ngx_int_t;
        }
        (*zone).init = Some(init_zone);
        (*zone).data = main as *mut MainConf as *mut c_void;
        // Remembered for the error message in `init_zone`.
        ZONE_LOG_CF = cf;
    }
    nginx_sys::NGX_OK as ngx_int_t
}

// Only used to word an error while the configuration is loaded (single-threaded).
static mut ZONE_LOG_CF: *mut ngx_conf_t = ptr::null_mut();

/// nginx's zone init hook: `old` is non-null when the zone is handed over from the previous
/// configuration.
unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls this in the master, before forking workers, with the zone mapped;
    // the slab pool sits at the start of the zone; `data` is the MainConf we set in `add`.
    unsafe {
        let pool = (*zone).shm.addr as *mut ngx_slab_pool_t;
        let main = &mut *((*zone).data as *mut MainConf);
        let peers: usize = main.upstreams.iter().map(|&u| (*u).peers.len()).sum();
        let capacity = capacity_for(peers);
        let bytes_needed = table_bytes(capacity);

        let mut header = (*pool).data as *mut Header;
        let reuse = !old.is_null() && !header.is_null() && header_matches(&*header, capacity);
        if !reuse {
            header = ngx_slab_alloc(pool, bytes_needed) as *mut Header;
            if header.is_null() {
                return fail(&format!(
                    "lb: cannot allocate {bytes_needed} bytes for {capacity} peer records in \
                     zone \"{ZONE_NAME}\""
                ));
            }
            ptr::write_bytes(header as *mut u8, 0, bytes_needed);
            init_header(&mut *header, capacity);
            (*pool).data = header as *mut c_void;
        }
        (*header).generation = (*header).generation.wrapping_add(1).max(1);
        let generation = (*header).generation;
        GENERATION.store(generation, Relaxed);
        let records = core::slice::from_raw_parts(
            (header as *mut u8).add(core::mem::size_of::<Header>()) as *const PeerShared,
            capacity as usize,
        );

        for &u in &main.upstreams {
            let u = &mut *u;
            let upstream = bytes(&u.name);
            let default_up = u.check.as_ref().is_none_or(|c| c.conf.default_up);
            let checked = u.check.is_some();
            for p in &mut u.peers {
                let key = table::peer_key(upstream, bytes(&p.name));
                let Some(c) = claim(records, key, generation) else {
                    return fail(&format!(
                        "lb: no free peer record in zone \"{ZONE_NAME}\" ({capacity} records)"
                    ));
                };
                let record = &records[c.index()];
                match c {
                    // A new peer starts as `default=` says.
                    Claim::Fresh(_) => record.health.store(Health::initial(default_up).0, Relaxed),
                    // A known peer keeps its health, unless checks were turned off: then
                    // nothing would ever bring it back, so it counts as up.
                    Claim::Kept(_) if !checked => {
                        record.health.store(Health::initial(true).0, Relaxed)
                    }
                    Claim::Kept(_) => {}
                }
                p.shared = record;
            }
            u.records_ready = true;
        }
    }
    nginx_sys::NGX_OK as ngx_int_t
}

unsafe fn fail(msg: &str) -> ngx_int_t {
    // SAFETY: set in `add` for the configuration now being loaded.
    unsafe {
        let cf = ZONE_LOG_CF;
        if !cf.is_null() {
            log_plain(cf, NGX_LOG_EMERG as ngx_uint_t, msg);
        }
    }
    nginx_sys::NGX_ERROR as ngx_int_t
}
