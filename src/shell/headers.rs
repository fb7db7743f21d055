//! The nginx side of `lb_add_header`: the directive handler, its per-location configuration
//! (inherited like `add_header`: a level with its own lines replaces the parent's list) and the
//! header filter that evaluates the values for each response.

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_http_compile_complex_value, ngx_http_compile_complex_value_t,
    ngx_http_complex_value, ngx_http_complex_value_t, ngx_http_output_header_filter_pt,
    ngx_http_request_t, ngx_int_t, ngx_list_push, ngx_pnalloc, ngx_str_t, ngx_table_elt_t,
    NGX_LOG_WARN,
};

use crate::headers::spec::{applies_to_status, parse_add_header, show, unsafe_runtime_value};
use crate::shell::nginx::{
    bytes, conf_error, directive_args, directive_params, CONF_ERROR, CONF_OK,
};

/// One compiled `lb_add_header` line.
#[derive(Clone)]
struct AddHeader {
    name: ngx_str_t,
    lowcase_name: *mut u8,
    value: ngx_http_complex_value_t,
    always: bool,
}

/// Per-location configuration. `None` means "no `lb_add_header` at this level": inherit.
#[derive(Default)]
pub struct HeadersConf {
    headers: Option<Vec<AddHeader>>,
}

static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;

/// Whether the configuration being loaded has any `lb_add_header`: without one the filter is
/// not put in the chain at all, so it costs nothing.
static mut ANY_HEADER: bool = false;

pub(crate) unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: nginx passes a valid `cf` whose pool lives as long as the configuration; the
    // pool runs the value's destructor (freeing the Vec) when the configuration is released.
    unsafe { ngx::core::Pool::from_ngx_pool((*cf).pool) }.allocate(HeadersConf::default())
        as *mut c_void
}

pub(crate) unsafe extern "C" fn merge_loc_conf(
    _cf: *mut ngx_conf_t,
    parent: *mut c_void,
    child: *mut c_void,
) -> *mut c_char {
    // SAFETY: both pointers come from `create_loc_conf` of this module.
    let (parent, child) = unsafe {
        (
            &*(parent as *const HeadersConf),
            &mut *(child as *mut HeadersConf),
        )
    };
    if child.headers.is_none() {
        child.headers = parent.headers.clone();
    }
    CONF_OK
}

pub(crate) unsafe extern "C" fn postconfiguration(_cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: configuration runs in one thread; this is how every nginx filter joins the chain
    // (the chain is rebuilt from scratch for every configuration load).
    unsafe {
        if ANY_HEADER {
            NEXT_HEADER_FILTER = nginx_sys::ngx_http_top_header_filter;
            nginx_sys::ngx_http_top_header_filter = Some(header_filter);
        }
        ANY_HEADER = false;
    }
    crate::shell::nginx::OK
}

pub(crate) unsafe extern "C" fn set_add_header(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls directive handlers with a valid `cf` and our own loc conf.
    let conf = unsafe { &mut *(conf as *mut HeadersConf) };
    // SAFETY: `cf` is the configuration being parsed.
    let args = unsafe { directive_args(cf) };
    // SAFETY: `cf` is the configuration being parsed.
    let raw = unsafe { directive_params(cf) };
    let spec = match parse_add_header(&raw) {
        Ok(spec) => spec,
        // SAFETY: `cf` is the configuration being parsed.
        Err(e) => return unsafe { conf_error(cf, &format!("lb_add_header: {e}")) },
    };
    let always = spec.always;

    // SAFETY: `ccv` is fully initialised (zeroed, then the fields nginx reads); the compiled
    // value points into the configuration pool, which outlives this configuration.
    let value = unsafe {
        let mut value: ngx_http_complex_value_t = core::mem::zeroed();
        let mut ccv: ngx_http_compile_complex_value_t = core::mem::zeroed();
        ccv.cf = cf;
        ccv.value = &mut *(args.as_ptr().add(2) as *mut ngx_str_t);
        ccv.complex_value = &mut value;
        if ngx_http_compile_complex_value(&mut ccv) != crate::shell::nginx::OK {
            return conf_error(
                cf,
                &format!(
                    "lb_add_header: cannot compile the value \"{}\"",
                    show(spec.value)
                ),
            );
        }
        value
    };

    let name = args[1];
    // SAFETY: allocating from the configuration pool, which nginx keeps for the cycle.
    let lowcase_name = unsafe { ngx_pnalloc((*cf).pool, name.len) } as *mut u8;
    if lowcase_name.is_null() {
        return CONF_ERROR;
    }
    // SAFETY: `lowcase_name` has room for `name.len` bytes; `spec.name` has that length.
    unsafe {
        for (i, b) in spec.name.iter().enumerate() {
            *lowcase_name.add(i) = b.to_ascii_lowercase();
        }
    }

    // SAFETY: configuration runs in one thread.
    unsafe { ANY_HEADER = true };
    conf.headers.get_or_insert_with(Vec::new).push(AddHeader {
        name,
        lowcase_name,
        value,
        always,
    });
    CONF_OK
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls header filters with a live request; our loc conf slot was created by
    // `create_loc_conf` for every location.
    unsafe {
        let module = &*ptr::addr_of!(crate::ngx_http_lb_headers_filter_module);
        let conf = *(*r).loc_conf.add(module.ctx_index) as *const HeadersConf;
        if r == (*r).main && !conf.is_null() {
            if let Some(headers) = &(*conf).headers {
                let status = (*r).headers_out.status;
                for h in headers {
                    if !applies_to_status(h.always, status) {
                        continue;
                    }
                    if add_one(r, h) != crate::shell::nginx::OK {
                        return crate::shell::nginx::ERROR;
                    }
                }
            }
        }
        match NEXT_HEADER_FILTER {
            Some(next) => next(r),
            None => crate::shell::nginx::OK,
        }
    }
}

/// Evaluates one header for this response and appends it, unless it is empty or unsafe.
///
/// # Safety
/// `r` must be a live main request.
unsafe fn add_one(r: *mut ngx_http_request_t, h: &AddHeader) -> ngx_int_t {
    // SAFETY: the caller guarantees `r`; `h.value` was compiled for this configuration.
    unsafe {
        let mut value = ngx_str_t {
            len: 0,
            data: ptr::null_mut(),
        };
        if ngx_http_complex_value(r, &h.value as *const _ as *mut _, &mut value)
            != crate::shell::nginx::OK
        {
            return crate::shell::nginx::ERROR;
        }
        if value.len == 0 {
            return crate::shell::nginx::OK;
        }
        if unsafe_runtime_value(bytes(&value)) {
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                (*(*r).connection).log,
                "lb_add_header: dropped header \"{}\": its value contains CR, LF or NUL",
                show(bytes(&h.name))
            );
            return crate::shell::nginx::OK;
        }
        let elt = ngx_list_push(&mut (*r).headers_out.headers) as *mut ngx_table_elt_t;
        if elt.is_null() {
            return crate::shell::nginx::ERROR;
        }
        // Zeroing first keeps this correct for nginx versions with and without `next`.
        ptr::write_bytes(elt, 0, 1);
        (*elt).hash = 1;
        (*elt).key = h.name;
        (*elt).value = value;
        (*elt).lowcase_key = h.lowcase_name;
        crate::shell::nginx::OK
    }
}
