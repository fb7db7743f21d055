//! `$lb_peer` (the peer that served the request, as written in `server`), `$lb_peer_state`
//! (its state when it was chosen) and `$lb_upstream` (the upstream's name), for `log_format`
//! and `lb_add_header`. They read the request's context of our module, which `init_peer` sets.
//! Stream sessions have the same variables (`shell::l4` registers them), read by `value`.

use core::ptr;

use nginx_sys::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_http_variable_value_t, ngx_int_t,
    ngx_str_t, ngx_uint_t, NGX_HTTP_VAR_NOCACHEABLE,
};

use crate::balance::Verdict;
use crate::health::state::Health;
use crate::shell::conf::ctx_index;
use crate::shell::pick::RequestPeers;
use crate::status::snapshot::PeerState;

const PEER: usize = 0;
const PEER_STATE: usize = 1;
const UPSTREAM: usize = 2;

/// The variables' names and `data`.
pub const VARIABLES: [(&str, usize); 3] = [
    ("lb_peer", PEER),
    ("lb_peer_state", PEER_STATE),
    ("lb_upstream", UPSTREAM),
];

/// Registers the variables (from the module's `preconfiguration`).
///
/// # Safety
/// `cf` must be the configuration being parsed.
pub unsafe fn add(cf: *mut ngx_conf_t) -> ngx_int_t {
    for (name, which) in VARIABLES {
        let mut n = ngx_str_t {
            len: name.len(),
            data: name.as_ptr() as *mut u8,
        };
        // SAFETY: nginx copies the name; `get` is called with the `data` given here.
        unsafe {
            let v = ngx_http_add_variable(cf, &mut n, NGX_HTTP_VAR_NOCACHEABLE as ngx_uint_t);
            if v.is_null() {
                return crate::shell::nginx::ERROR;
            }
            (*v).get_handler = Some(get);
            (*v).data = which;
        }
    }
    crate::shell::nginx::OK
}

unsafe extern "C" fn get(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    which: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes a live request and value; the context, when set, is the
    // `RequestPeers` of this request (pool memory).
    unsafe { value(*(*r).ctx.add(ctx_index()) as *const RequestPeers, v, which) }
}

/// Sets `v` to variable `which` of the request or session whose peers are `rp` (null: none
/// chosen, the variable is not found).
///
/// # Safety
/// `rp` is null or a live `RequestPeers`, whose table lives for the cycle; `v` is live.
pub unsafe fn value(
    rp: *const RequestPeers,
    v: *mut ngx_http_variable_value_t,
    which: usize,
) -> ngx_int_t {
    // SAFETY: as required by the caller.
    unsafe {
        let up = if rp.is_null() {
            ptr::null()
        } else {
            (*rp).upstream as *const crate::shell::table::Upstream
        };
        let value: Option<(*const u8, usize)> = match which {
            UPSTREAM if !up.is_null() => Some(((*up).name.data, (*up).name.len)),
            PEER if !up.is_null() && (*rp).last != usize::MAX => {
                let p = &(&(*(*rp).members).peers)[(*rp).last];
                Some((p.server().data, p.server().len))
            }
            PEER_STATE if !up.is_null() && (*rp).last != usize::MAX => {
                let p = &(&(*(*rp).members).peers)[(*rp).last];
                let h = Health((*rp).last_health);
                let verdict = if h.up() {
                    Verdict::Usable
                } else {
                    Verdict::Unhealthy
                };
                let name =
                    PeerState::derive(p.down, (*up).check.is_some(), h.checking(), verdict).name();
                Some((name.as_ptr(), name.len()))
            }
            _ => None,
        };
        match value {
            Some((data, len)) => {
                (*v).set_len(len as u32);
                (*v).set_valid(1);
                (*v).set_no_cacheable(1);
                (*v).set_not_found(0);
                (*v).data = data as *mut u8;
            }
            None => {
                (*v).set_not_found(1);
            }
        }
    }
    crate::shell::nginx::OK
}
