//! `server NAME resolve` needs nginx 1.27.3 or later; with an older nginx (which refuses
//! `resolve` itself) no upstream ever has resolved peers, and this is all there is.

use nginx_sys::{ngx_cycle_t, ngx_http_upstream_rr_peers_t, ngx_http_upstream_srv_conf_t};

use crate::shell::conf::MainConf;
use crate::shell::probe::Probe;
use crate::shell::table::{Key, KeyMap, Upstream};

pub const DEFAULT_MAX_RESOLVED: usize = 0;

pub struct Dynamic {
    pub servers: usize,
    pub max_resolved: usize,
    pub seed: u64,
    pub probes: KeyMap<*mut Probe>,
}

impl Dynamic {
    pub fn new(_us: *mut ngx_http_upstream_srv_conf_t, _servers: usize, _max: usize) -> Dynamic {
        unreachable!("no resolved servers before nginx 1.27.3")
    }

    pub fn slot_key(&self, _slot: usize) -> Option<Key> {
        None
    }
}

/// # Safety
/// Nothing to uphold: there are no resolved servers.
pub unsafe fn has_resolve(_rr: *const ngx_http_upstream_rr_peers_t) -> bool {
    false
}

/// # Safety
/// Nothing to uphold: there are no resolved servers.
pub unsafe fn resolve_servers(_rr: *const ngx_http_upstream_rr_peers_t) -> usize {
    0
}

/// # Safety
/// Nothing to uphold.
pub unsafe fn commit(_u: &mut Upstream, _main: &MainConf) -> bool {
    true
}

/// # Safety
/// Nothing to uphold.
pub unsafe fn worker_start(_cycle: *mut ngx_cycle_t, _u: *mut Upstream, _main: *const MainConf) {}

/// # Safety
/// Nothing to uphold.
#[inline]
pub unsafe fn refresh(_u: &mut Upstream) {}
