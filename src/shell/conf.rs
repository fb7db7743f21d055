//! The module's configuration types and how the shell finds them: `SrvConf` per `upstream {}`
//! block, `MainConf` per cycle, the accessors nginx's configuration arrays need, and the
//! configuration log.

use core::ptr;

use nginx_sys::{
    ngx_conf_t, ngx_cycle_t, ngx_http_conf_ctx_t, ngx_http_module, ngx_http_upstream_srv_conf_t,
    ngx_log_error_core, ngx_uint_t,
};

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
}

/// Per-cycle state: every upstream that uses `lb_upstream`, and the shared zone.
pub struct MainConf {
    pub upstreams: Vec<*mut Upstream>,
    /// Rows of per-worker active counters in the zone (from `worker_processes`).
    pub slots: u32,
    /// The zone's table, once `zone::init_zone` found or made it.
    pub table: *mut crate::shm::table::Header,
    /// This worker's row of active counters.
    pub row: Option<usize>,
}

impl Default for MainConf {
    fn default() -> Self {
        MainConf {
            upstreams: Vec::new(),
            slots: 0,
            table: ptr::null_mut(),
            row: None,
        }
    }
}

/// Our module's `ctx_index`.
pub fn ctx_index() -> usize {
    // SAFETY: nginx sets `ctx_index` once while loading the configuration; reads after that
    // see a stable value.
    unsafe { (*ptr::addr_of!(crate::ngx_http_lb_module)).ctx_index }
}

/// Our `SrvConf` for an upstream block, or null for upstreams nginx created implicitly
/// (`proxy_pass http://host`) that have no configuration of their own.
///
/// # Safety
/// `us` must be a live upstream configuration of the current cycle.
pub unsafe fn srv_conf(us: *const ngx_http_upstream_srv_conf_t) -> *mut SrvConf {
    // SAFETY: `srv_conf` of an `upstream {}` block holds one slot per HTTP module.
    unsafe {
        if (*us).srv_conf.is_null() {
            return ptr::null_mut();
        }
        *(*us).srv_conf.add(ctx_index()) as *mut SrvConf
    }
}

/// Our main conf from the configuration being parsed.
///
/// # Safety
/// `cf` must be inside the `http {}` block's configuration.
pub unsafe fn main_conf(cf: *mut ngx_conf_t) -> *mut MainConf {
    // SAFETY: every context inside `http {}` shares the http main_conf array.
    unsafe {
        let ctx = (*cf).ctx as *mut ngx_http_conf_ctx_t;
        *(*ctx).main_conf.add(ctx_index()) as *mut MainConf
    }
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

/// Our main conf in `cycle`, or null when there is no `http` block.
///
/// # Safety
/// `cycle` must be a live cycle.
pub unsafe fn cycle_main_conf(cycle: *mut ngx_cycle_t) -> *mut MainConf {
    // SAFETY: the http module's slot of `conf_ctx` holds the http configuration context.
    unsafe {
        let http = *(*cycle)
            .conf_ctx
            .add((*ptr::addr_of!(ngx_http_module)).index)
            as *mut ngx_http_conf_ctx_t;
        if http.is_null() {
            return ptr::null_mut();
        }
        *(*http).main_conf.add(ctx_index()) as *mut MainConf
    }
}
