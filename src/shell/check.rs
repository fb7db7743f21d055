//! `lb_check ...;` in an `upstream {}` block: parses the parameters (pure, `config.rs`), then
//! prepares what probes need at run time — the compiled body regex and the TLS context — so
//! that nothing is compiled or loaded in a worker.

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_pool_cleanup_add, ngx_regex_compile, ngx_regex_compile_t,
    ngx_regex_t, ngx_ssl_certificate, ngx_ssl_cleanup_ctx, ngx_ssl_create, ngx_ssl_t,
    ngx_ssl_trusted_certificate, ngx_str_t, NGX_SSL_TLSv1_2, NGX_SSL_TLSv1_3,
};

use crate::health::config::{parse_check, CheckConf};
use crate::shell::conf::SrvConf;
use crate::shell::nginx::{bytes, conf_error, directive_params, CONF_ERROR, CONF_OK};

/// A parsed `lb_check` with what the workers need ready.
pub struct CheckSetup {
    pub conf: CheckConf,
    /// `body=~...`, compiled by nginx's regex engine.
    pub regex: *mut ngx_regex_t,
    /// TLS client context for `type=https` and `type=tls`.
    pub ssl: *mut ngx_ssl_t,
    /// `expect=~...` (stream checks), compiled by nginx's regex engine.
    pub expect_regex: *mut ngx_regex_t,
}

/// The `lb_check` directive handler.
///
/// # Safety
/// Called by nginx with the configuration being parsed and our srv conf.
pub unsafe extern "C" fn set_lb_check(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our own srv conf and the configuration being parsed; arguments are
    // nginx strings from the configuration pool.
    unsafe {
        let conf = &mut *(conf as *mut SrvConf);
        if conf.check.is_some() {
            return conf_error(cf, "\"lb_check\" directive is duplicate");
        }
        let check = match parse_check(&directive_params(cf)) {
            Ok(c) => c,
            Err(e) => return conf_error(cf, &format!("lb_check: {e}")),
        };
        let mut setup = CheckSetup {
            conf: check,
            regex: ptr::null_mut(),
            ssl: ptr::null_mut(),
            expect_regex: ptr::null_mut(),
        };
        if let Some(re) = setup.conf.body.clone() {
            match compile_regex(cf, &re) {
                Ok(r) => setup.regex = r,
                Err(e) => {
                    return conf_error(cf, &format!("lb_check: invalid regex in \"body\": {e}"))
                }
            }
        }
        if let Some(crate::health::config::Expect::Regex(re)) = setup.conf.expect.clone() {
            match compile_regex(cf, &re) {
                Ok(r) => setup.expect_regex = r,
                Err(e) => {
                    return conf_error(cf, &format!("lb_check: invalid regex in \"expect\": {e}"))
                }
            }
        }
        if setup.conf.kind.uses_tls() {
            match create_ssl(cf, &setup.conf) {
                Some(ssl) => setup.ssl = ssl,
                None => return CONF_ERROR,
            }
        }
        conf.check = Some(Box::new(setup));
    }
    CONF_OK
}

/// `lb_check` in an http upstream: every type but `udp`.
///
/// # Safety
/// Called by nginx with the configuration being parsed and our srv conf.
pub unsafe extern "C" fn set_lb_check_http(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: as for `set_lb_check`.
    unsafe {
        let rv = set_lb_check(cf, cmd, conf);
        if rv != CONF_OK {
            return rv;
        }
        let conf = &*(conf as *const SrvConf);
        if let Some(c) = &conf.check {
            if !c.conf.kind.for_http() {
                return conf_error(
                    cf,
                    &format!(
                        "lb_check: \"type={}\" is not allowed in an http upstream (UDP checks \
                         are for stream upstreams)",
                        c.conf.kind.name()
                    ),
                );
            }
        }
    }
    CONF_OK
}

/// Compiles `pattern` with nginx's PCRE; the regex lives in the configuration pool.
unsafe fn compile_regex(cf: *mut ngx_conf_t, pattern: &str) -> Result<*mut ngx_regex_t, String> {
    let mut errstr = [0u8; 256];
    // The pattern must outlive the configuration: copy it into the pool.
    // SAFETY: `cf->pool` is the configuration pool; `rc` is fully initialised before use.
    unsafe {
        let data = nginx_sys::ngx_pnalloc((*cf).pool, pattern.len()) as *mut u8;
        if data.is_null() {
            return Err("out of memory".into());
        }
        ptr::copy_nonoverlapping(pattern.as_ptr(), data, pattern.len());
        let mut rc: ngx_regex_compile_t = core::mem::zeroed();
        rc.pattern = ngx_str_t {
            len: pattern.len(),
            data,
        };
        rc.pool = (*cf).pool;
        rc.err = ngx_str_t {
            len: errstr.len(),
            data: errstr.as_mut_ptr(),
        };
        if ngx_regex_compile(&mut rc) != nginx_sys::NGX_OK as isize {
            return Err(String::from_utf8_lossy(bytes(&rc.err)).into_owned());
        }
        Ok(rc.regex)
    }
}

/// A TLS client context for probes: TLS 1.2 and 1.3, the trusted CAs of `ca=` when `verify=on`,
/// a client certificate from `cert=`/`key=`. Errors are logged by nginx's own functions.
unsafe fn create_ssl(cf: *mut ngx_conf_t, c: &CheckConf) -> Option<*mut ngx_ssl_t> {
    // SAFETY: allocations come from the configuration pool; the cleanup frees the OpenSSL
    // context with the configuration.
    unsafe {
        let ssl =
            nginx_sys::ngx_pcalloc((*cf).pool, core::mem::size_of::<ngx_ssl_t>()) as *mut ngx_ssl_t;
        if ssl.is_null() {
            return None;
        }
        (*ssl).log = (*cf).log;
        if ngx_ssl_create(
            ssl,
            (NGX_SSL_TLSv1_2 | NGX_SSL_TLSv1_3) as _,
            ptr::null_mut(),
        ) != nginx_sys::NGX_OK as isize
        {
            return None;
        }
        let cln = ngx_pool_cleanup_add((*cf).pool, 0);
        if cln.is_null() {
            return None;
        }
        (*cln).handler = Some(ngx_ssl_cleanup_ctx);
        (*cln).data = ssl as *mut c_void;

        if let Some(ca) = &c.trusted_ca {
            let mut name = pool_str(cf, ca)?;
            if ngx_ssl_trusted_certificate(cf, ssl, &mut name, 4) != nginx_sys::NGX_OK as isize {
                return None;
            }
        }
        if let (Some(cert), Some(key)) = (&c.cert, &c.key) {
            let mut cert = pool_str(cf, cert)?;
            let mut key = pool_str(cf, key)?;
            if ngx_ssl_certificate(cf, ssl, &mut cert, &mut key, ptr::null_mut())
                != nginx_sys::NGX_OK as isize
            {
                return None;
            }
        }
        Some(ssl)
    }
}

/// Copies `s` into the configuration pool as an nginx string.
unsafe fn pool_str(cf: *mut ngx_conf_t, s: &str) -> Option<ngx_str_t> {
    // SAFETY: the pool outlives the configuration; one extra byte for a terminating NUL, which
    // nginx's file functions expect.
    unsafe {
        let data = nginx_sys::ngx_pnalloc((*cf).pool, s.len() + 1) as *mut u8;
        if data.is_null() {
            return None;
        }
        ptr::copy_nonoverlapping(s.as_ptr(), data, s.len());
        *data.add(s.len()) = 0;
        Some(ngx_str_t { len: s.len(), data })
    }
}
