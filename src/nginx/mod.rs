//! Small helpers shared by the nginx shell: turning nginx strings into byte slices, reading
//! directive arguments, and reporting configuration errors the way nginx does.

use core::ffi::c_char;

use nginx_sys::{ngx_conf_t, ngx_str_t, NGX_LOG_EMERG};

/// nginx's `NGX_CONF_OK`.
pub const CONF_OK: *mut c_char = core::ptr::null_mut();
/// nginx's `NGX_CONF_ERROR`.
pub const CONF_ERROR: *mut c_char = ngx::core::NGX_CONF_ERROR as *mut c_char;

/// The bytes of an nginx string.
///
/// # Safety
/// `s.data` must point to `s.len` readable bytes (or `len` is 0) that outlive the result.
pub unsafe fn bytes<'a>(s: &ngx_str_t) -> &'a [u8] {
    if s.len == 0 || s.data.is_null() {
        &[]
    } else {
        // SAFETY: the caller guarantees `data` points to `len` live bytes.
        unsafe { core::slice::from_raw_parts(s.data, s.len) }
    }
}

/// The arguments of the directive being parsed, the directive's own name first.
///
/// # Safety
/// `cf` must be the `ngx_conf_t` nginx passed to a directive handler.
pub unsafe fn directive_args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: while a directive handler runs, `cf->args` is an array of `ngx_str_t`.
    unsafe {
        let args = (*cf).args;
        if args.is_null() || (*args).nelts == 0 {
            return &[];
        }
        core::slice::from_raw_parts((*args).elts as *const ngx_str_t, (*args).nelts)
    }
}

/// The arguments of the directive being parsed as byte slices, without the directive's name:
/// what the pure parsers take.
///
/// # Safety
/// `cf` must be the `ngx_conf_t` nginx passed to a directive handler.
pub unsafe fn directive_params<'a>(cf: *mut ngx_conf_t) -> Vec<&'a [u8]> {
    // SAFETY: directive arguments are nginx strings from the configuration pool.
    unsafe {
        directive_args(cf)
            .iter()
            .skip(1)
            .map(|a| bytes(a))
            .collect()
    }
}

/// Logs `[emerg] <msg> in <file>:<line>` and returns `NGX_CONF_ERROR`, so that `nginx -t`
/// fails naming the directive and the bad value.
///
/// # Safety
/// `cf` must be the `ngx_conf_t` of the configuration being parsed.
pub unsafe fn conf_error(cf: *mut ngx_conf_t, msg: &str) -> *mut c_char {
    ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", msg);
    CONF_ERROR
}
