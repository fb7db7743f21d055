//! The module's configuration types and how the shell finds them: `SrvConf` per `upstream {}`
//! block, `MainConf` per cycle, the accessors nginx's configuration arrays need, and the
//! configuration log.

use core::ptr;

use nginx_sys::{
    ngx_conf_t, ngx_cycle_t, ngx_http_upstream_srv_conf_t, ngx_log_error_core, ngx_uint_t,
};
use ngx::http::HttpModuleConfExt;

use super::table::Upstream;
use crate::balance::MethodConf;

/// Our configuration of one `upstream {}` block (nginx creates one per `server`/`upstream`).
#[derive(Default)]
pub struct SrvConf {
    pub enabled: bool,
    pub method: MethodConf,
    /// Where `lb_upstream` was written, for messages after parsing.
    pub file: String,
    pub line: usize,
    /// Built by `init_upstream`; stays null if another method replaced us.
    pub upstream: *mut Upstream,
    /// `lb_check`, until `init_upstream` hands it to the table.
    pub check: Option<Box<crate::shell::check::CheckSetup>>,
    /// `lb_keepalive`.
    pub keepalive: Option<crate::keepalive::KeepaliveConf>,
    /// `lb_panic N%`.
    pub panic: Option<u32>,
    /// `lb_outlier ...`.
    pub outlier: Option<crate::balance::outlier::OutlierConf>,
    /// `lb_slow_start TIME`, ms.
    pub slow_start_ms: Option<u64>,
}

/// Per-cycle state: every upstream that uses `lb_upstream`, and the shared zone.
pub struct MainConf {
    pub upstreams: Vec<*mut Upstream>,
    /// Rows of per-worker active counters in the zone (from `worker_processes`).
    pub slots: u32,
    /// The zone's table, once `zone::init_zone` found or made it.
    pub table: *mut crate::shm::table::Header,
    /// The zone's slab pool (its mutex serialises claims of records at run time).
    pub pool: *mut nginx_sys::ngx_slab_pool_t,
    /// The configuration generation this cycle committed (`shell::zone::commit`).
    pub generation: u32,
    /// This worker's row of active counters.
    pub row: Option<usize>,
    /// `lb_state`: where operators' changes (`lb_api`) are kept across restarts.
    pub state_path: Option<std::path::PathBuf>,
    /// `init_zone` made a new table (a start, or a binary upgrade): the state file is read.
    pub fresh_table: bool,
    /// The log of the cycle this configuration belongs to (set at the commit): while nginx
    /// commits a configuration, `ngx_cycle` is still the previous one, whose log may be
    /// another file (nginx's compiled-in default at a start).
    pub log: *mut nginx_sys::ngx_log_t,
    /// The shared zone once `zone::add` declared it: a later block (`http {}` after
    /// `stream {}`, or the reverse) that brings more upstreams only resizes it.
    pub zone: *mut nginx_sys::ngx_shm_zone_t,
}

impl MainConf {
    /// Where messages about this configuration go.
    pub fn log(&self) -> *mut nginx_sys::ngx_log_t {
        if self.log.is_null() {
            // SAFETY: nginx's current cycle is always set while modules run.
            unsafe { (*nginx_sys::ngx_cycle).log }
        } else {
            self.log
        }
    }
}

impl Default for MainConf {
    fn default() -> Self {
        MainConf {
            upstreams: Vec::new(),
            slots: 0,
            table: ptr::null_mut(),
            pool: ptr::null_mut(),
            generation: 0,
            row: None,
            state_path: None,
            fresh_table: false,
            log: ptr::null_mut(),
            zone: ptr::null_mut(),
        }
    }
}

/// Our module's `ctx_index`.
pub fn ctx_index() -> usize {
    module().ctx_index
}

/// Our balancer module, as nginx's configuration accessors want it.
fn module() -> &'static nginx_sys::ngx_module_t {
    // SAFETY: nginx sets the module's indices once while loading the configuration, before
    // any of our hooks runs; after that the static is only read.
    unsafe { &*ptr::addr_of!(crate::ngx_http_lb_module) }
}

impl SrvConf {
    /// For a block without `lb_upstream`: the first of our directives that only mean something
    /// with it, and what to add to the message (`[emerg]` at the end of the configuration).
    pub fn without_lb_upstream(&self) -> Option<(&'static str, &'static str)> {
        [
            (self.keepalive.is_some(), "lb_keepalive", ""),
            (self.slow_start_ms.is_some(), "lb_slow_start", ""),
            (self.outlier.is_some(), "lb_outlier", ""),
            (self.panic.is_some(), "lb_panic", ""),
            (
                self.check.is_some(),
                "lb_check",
                "; health checks need \"lb_upstream\" in the same block",
            ),
        ]
        .into_iter()
        .find(|&(set, _, _)| set)
        .map(|(_, name, why)| (name, why))
    }
}

/// Our `SrvConf` for an upstream block, or null for upstreams nginx created implicitly
/// (`proxy_pass http://host`) that have no configuration of their own.
///
/// # Safety
/// `us` must be a live upstream configuration of the current cycle.
pub unsafe fn srv_conf(us: *const ngx_http_upstream_srv_conf_t) -> *mut SrvConf {
    // SAFETY: the caller passes a live upstream configuration; ngx reads our module's slot.
    unsafe { (*us).http_server_conf_unchecked::<SrvConf>(module()) }
        .map_or(ptr::null_mut(), |c| c.as_ptr())
}

/// Our main conf from the configuration being parsed (inside `http {}` or `stream {}`).
///
/// # Safety
/// `cf` must be a configuration being parsed.
pub unsafe fn main_conf(cf: *mut ngx_conf_t) -> *mut MainConf {
    // SAFETY: as required by the caller.
    unsafe { cycle_conf((*cf).cycle) }
}

/// The one `MainConf` of `cycle`: the configuration of our core module
/// (`ngx_lb_core_module`), which nginx creates for every cycle before any block is parsed, so
/// that the upstreams of `http {}` and of `stream {}` share one zone and one status whatever
/// order the blocks come in. The http module's main conf is the same object.
///
/// # Safety
/// `cycle` must be a live cycle (or one being configured) that loaded this module.
pub unsafe fn cycle_conf(cycle: *mut ngx_cycle_t) -> *mut MainConf {
    // SAFETY: nginx sets our core module's index when it adds the module, and stores what our
    // `create_conf` returned at that index of the cycle's `conf_ctx` (null when it has not
    // been created, e.g. a module table without it).
    unsafe {
        let index = (*ptr::addr_of!(crate::ngx_lb_core_module)).index;
        let ctx = (*cycle).conf_ctx;
        if ctx.is_null() || index == ngx_uint_t::MAX {
            return ptr::null_mut();
        }
        *ctx.add(index) as *mut MainConf
    }
}

/// Our core module's `create_conf`: the cycle's `MainConf`.
///
/// # Safety
/// Called by nginx with the cycle being configured.
pub unsafe extern "C" fn create_core_conf(cycle: *mut ngx_cycle_t) -> *mut core::ffi::c_void {
    // SAFETY: the cycle's pool lives as long as its configuration and runs Drop.
    unsafe { ngx::core::Pool::from_ngx_pool((*cycle).pool) }.allocate(MainConf::default())
        as *mut core::ffi::c_void
}

/// Logs to the configuration's log without nginx's " in file:line" suffix (which would point at
/// the end of the `http` block, not at the cause).
///
/// # Safety
/// `cf` must be the configuration being processed.
pub unsafe fn log_plain(cf: *mut ngx_conf_t, level: ngx_uint_t, msg: &str) {
    // SAFETY: `%*s` reads exactly `msg.len()` bytes from `msg`; `cf->log` is live.
    unsafe {
        if (*(*cf).log).log_level < level {
            return;
        }
        ngx_log_error_core(
            level,
            (*cf).log,
            0,
            c"%*s".as_ptr(),
            msg.len(),
            msg.as_ptr(),
        );
    }
}

/// Our main conf in `cycle`, or null when no `http {}` or `stream {}` upstream uses
/// `lb_upstream` (nothing to commit, start or stop).
///
/// # Safety
/// `cycle` must be a live cycle.
pub unsafe fn cycle_main_conf(cycle: *mut ngx_cycle_t) -> *mut MainConf {
    // SAFETY: as required by the caller.
    unsafe {
        let main = cycle_conf(cycle);
        if main.is_null() || (*main).upstreams.is_empty() {
            ptr::null_mut()
        } else {
            main
        }
    }
}
