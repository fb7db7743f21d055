//! `lb_upstream [method];` in an `upstream {}` block, and the module that carries it.
//!
//! nginx's own balancing directives (`least_conn`, `hash`, `ip_hash`, `random`) only warn when
//! they replace another method, and `keepalive` wraps whatever method it finds when it is
//! parsed. So: `lb_upstream` refuses an upstream that already has a method or `keepalive`
//! (it must come first), and after all upstreams are initialised `init_main_conf` refuses any
//! upstream where a later directive replaced us.

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_http_conf_ctx_t, ngx_http_upstream_init_peer_pt,
    ngx_http_upstream_init_round_robin, ngx_http_upstream_main_conf_t, ngx_http_upstream_module,
    ngx_http_upstream_rr_peers_t, ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_uint_t,
    NGX_LOG_EMERG, NGX_LOG_NOTICE,
};

use super::conf::{log_plain, main_conf, srv_conf, MainConf, SrvConf};
use super::table::Upstream;
use super::zone;
use crate::balance::method;
use crate::shell::nginx::{bytes, conf_error, directive_params, CONF_ERROR, CONF_OK};

/// `init_process`: gives this worker its own random sequences, then starts the health checks.
/// Freed heap memory in the master worth handing back to the system before the fork (bytes):
/// start-up tables of some ten thousand peers and more.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_WORTH: usize = 4 << 20;

pub(crate) unsafe extern "C" fn init_process(cycle: *mut nginx_sys::ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx calls this in a new process with its cycle; the tables were built in the
    // master and are this process's own copy now.
    unsafe {
        let pid = u64::from(crate::shell::nginx::pid());
        let main = crate::shell::conf::cycle_main_conf(cycle);
        if !main.is_null() {
            for (k, &u) in (*main).upstreams.iter().enumerate() {
                (*u).reseed(pid.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k as u64);
            }
            if crate::shell::nginx::serves_requests() {
                zone::worker_start(&mut *main, pid as u32);
                for &u in &(*main).upstreams {
                    super::resolve::worker_start(cycle, u, main);
                }
            }
        }
        crate::shell::probe::init_process(cycle)
    }
}

/// Runs in the master once nginx has committed a new configuration (after it opened the
/// listening sockets, when the reload can no longer fail): only now may the shared state that
/// running workers see change.
pub(crate) unsafe extern "C" fn init_module(cycle: *mut nginx_sys::ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx calls this with the new cycle, before forking its workers.
    unsafe {
        let main = crate::shell::conf::cycle_main_conf(cycle);
        if main.is_null() {
            return crate::shell::nginx::OK;
        }
        (*main).log = (*cycle).log;
        let signaller = ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_process)) as u32
            == nginx_sys::NGX_PROCESS_SIGNALLER;
        if nginx_sys::ngx_test_config != 0 || signaller {
            // `nginx -t` and `nginx -s ...` (which loads the configuration too, to find the
            // pid file) start no worker: handing out records (and reading lb_state) would only
            // cost time and touch a zone nobody uses.
            return crate::shell::nginx::OK;
        }
        let rc = zone::commit(&mut *main);
        // The tables of a large configuration's start-up (keys, occurrence maps, the copies
        // nginx's round-robin and ours are built from) are freed by now, but glibc keeps the
        // freed pages; every worker would inherit them as resident memory. Hand them back
        // before the fork, when they are worth it: after a trim, glibc's heap is left so that
        // every large free in a worker (a connection's pool) looks at trimming again, some 25
        // instructions per connection for nothing.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if libc::mallinfo2().fordblks >= TRIM_WORTH {
            libc::malloc_trim(0);
        }
        rc
    }
}

pub(crate) unsafe extern "C" fn exit_process(cycle: *mut nginx_sys::ngx_cycle_t) {
    // SAFETY: nginx calls this in an exiting worker with its cycle.
    unsafe {
        crate::shell::probe::exit_process();
        let main = crate::shell::conf::cycle_main_conf(cycle);
        if !main.is_null() {
            let pid = crate::shell::nginx::pid();
            zone::worker_exit(&*main, pid);
        }
    }
}

pub(crate) unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: nginx calls this with the configuration being parsed.
    unsafe { crate::shell::variables::add(cf) }
}

/// The http module's main conf is the cycle's one `MainConf` (`conf::cycle_conf`), shared with
/// the upstreams of `stream {}`.
pub(crate) unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: nginx calls this with the configuration being parsed, whose cycle created our
    // core module's configuration before parsing.
    unsafe { super::conf::main_conf(cf) as *mut c_void }
}

pub(crate) unsafe extern "C" fn create_srv_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: as above.
    unsafe { ngx::core::Pool::from_ngx_pool((*cf).pool) }.allocate(SrvConf::default())
        as *mut c_void
}

pub(crate) unsafe extern "C" fn set_lb_upstream(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our own srv conf and the configuration being parsed.
    let conf = unsafe { &mut *(conf as *mut SrvConf) };
    if conf.enabled {
        // SAFETY: `cf` is the configuration being parsed.
        return unsafe { conf_error(cf, "\"lb_upstream\" directive is duplicate") };
    }
    // SAFETY: `cf` is the configuration being parsed.
    conf.method = match method::parse(&unsafe { directive_params(cf) }) {
        Ok(m) => m,
        // SAFETY: `cf` is the configuration being parsed.
        Err(e) => return unsafe { conf_error(cf, &format!("lb_upstream: {e}")) },
    };

    // SAFETY: inside `upstream {}` the context's srv_conf array holds the upstream module's
    // configuration of this block.
    let uscf = unsafe {
        let ctx = (*cf).ctx as *mut ngx_http_conf_ctx_t;
        let index = (*ptr::addr_of!(ngx_http_upstream_module)).ctx_index;
        &mut *(*(*ctx).srv_conf.add(index) as *mut ngx_http_upstream_srv_conf_t)
    };
    if uscf.peer.init_upstream.is_some() {
        // SAFETY: `cf` is the configuration being parsed.
        return unsafe {
            conf_error(
                cf,
                &format!(
                    "lb_upstream: upstream \"{}\" already has a load balancing method or \
                     \"keepalive\"; \"lb_upstream\" must come first in the block and cannot be \
                     combined with \"least_conn\", \"hash\", \"ip_hash\" or \"random\"",
                    // SAFETY: the upstream's name is an nginx string from the pool.
                    bytes(&uscf.host).escape_ascii()
                ),
            )
        };
    }
    uscf.peer.init_upstream = Some(init_upstream);
    conf.enabled = true;
    // SAFETY: `conf_file` is set while a file is being parsed.
    unsafe {
        let file = (*cf).conf_file;
        if !file.is_null() {
            conf.file = String::from_utf8_lossy(bytes(&(*file).file.name)).into_owned();
            conf.line = (*file).line;
        }
    }
    CONF_OK
}

pub(crate) unsafe extern "C" fn set_lb_keepalive(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our own srv conf and the configuration being parsed.
    unsafe {
        let conf = &mut *(conf as *mut SrvConf);
        set_once(cf, &mut conf.keepalive, "lb_keepalive", |a| {
            crate::keepalive::parse(a)
        })
    }
}

/// `lb_panic N%;` (upstream): spread requests over every primary peer that is not `down`
/// when fewer than N% of them are available (`balance::panic`).
///
/// # Safety
/// Called by nginx with our srv conf and the configuration being parsed.
pub(crate) unsafe extern "C" fn set_lb_panic(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our own srv conf and the configuration being parsed.
    unsafe {
        let conf = &mut *(conf as *mut SrvConf);
        set_once(cf, &mut conf.panic, "lb_panic", |args| {
            let arg = args.first().copied().unwrap_or_default();
            crate::balance::panic::parse_percent(arg).ok_or_else(|| {
                format!(
                    "invalid value \"{}\" (expected a percentage from 1% to 100%, such as 50%)",
                    arg.escape_ascii()
                )
            })
        })
    }
}

/// `lb_outlier [key=value ...];` (upstream): outlier ejection (`balance::outlier`).
///
/// # Safety
/// Called by nginx with our srv conf and the configuration being parsed.
pub(crate) unsafe extern "C" fn set_lb_outlier(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our own srv conf and the configuration being parsed.
    unsafe {
        let conf = &mut *(conf as *mut SrvConf);
        set_once(cf, &mut conf.outlier, "lb_outlier", |a| {
            crate::balance::outlier::parse(a)
        })
    }
}

/// `lb_slow_start TIME;` (upstream): a peer that becomes available again ramps its weight from
/// 10% to 100% over TIME (`balance::slow_start`).
///
/// # Safety
/// Called by nginx with our srv conf and the configuration being parsed.
pub(crate) unsafe extern "C" fn set_lb_slow_start(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our own srv conf and the configuration being parsed.
    unsafe {
        let conf = &mut *(conf as *mut SrvConf);
        set_once(cf, &mut conf.slow_start_ms, "lb_slow_start", |args| {
            let arg = args.first().copied().unwrap_or_default();
            crate::conf::time::parse_time_ms(arg)
                .filter(|&ms| ms > 0)
                .ok_or_else(|| {
                    format!(
                        "invalid value \"{}\" (expected a positive time such as 30s)",
                        arg.escape_ascii()
                    )
                })
        })
    }
}

/// An upstream directive that may be given once: `"NAME" directive is duplicate` for a second
/// one, `NAME: ERROR` when `parse` refuses the arguments.
///
/// # Safety
/// `cf` is the configuration being parsed.
unsafe fn set_once<T, E: core::fmt::Display>(
    cf: *mut ngx_conf_t,
    slot: &mut Option<T>,
    name: &str,
    parse: impl FnOnce(&[&[u8]]) -> Result<T, E>,
) -> *mut c_char {
    if slot.is_some() {
        // SAFETY: as required by the caller.
        return unsafe { conf_error(cf, &format!("\"{name}\" directive is duplicate")) };
    }
    // SAFETY: as required by the caller.
    match parse(&unsafe { directive_params(cf) }) {
        Ok(v) => {
            *slot = Some(v);
            CONF_OK
        }
        // SAFETY: as required by the caller.
        Err(e) => unsafe { conf_error(cf, &format!("{name}: {e}")) },
    }
}

/// nginx's `init_upstream` hook: lets nginx's round-robin code parse the `server` lines, then
/// builds our table from them and takes over `init_peer`.
unsafe extern "C" fn init_upstream(
    cf: *mut ngx_conf_t,
    us: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    // SAFETY: nginx calls this with the configuration and a live upstream block.
    unsafe {
        if ngx_http_upstream_init_round_robin(cf, us) != crate::shell::nginx::OK {
            return crate::shell::nginx::ERROR;
        }
        let conf = srv_conf(us);
        let rr = (*us).peer.data as *const ngx_http_upstream_rr_peers_t;
        if conf.is_null() || rr.is_null() {
            return crate::shell::nginx::ERROR;
        }
        let mut table = Upstream::from_round_robin((*us).host, (*conf).method, rr);
        table.check = (*conf).check.take();
        table.panic = (*conf).panic.map(crate::shell::table::Panic::new);
        table.outlier = (*conf).outlier;
        if let Some(ms) = (*conf).slow_start_ms {
            table.slow_start = Some(crate::shell::table::SlowStart {
                ms,
                next_eval_ms: 0,
            });
            // Every weight is scaled by the ramp's steps (a ramping peer's by fewer).
            for p in &mut table.current_mut().peers {
                p.ramp = crate::balance::slow_start::STEPS;
            }
        }
        table.keepalive = (*conf)
            .keepalive
            .map(|k| Box::new(crate::shell::keepalive::PeerCaches::new(k)));
        // `server NAME resolve` (nginx 1.27.3+; nginx itself requires `zone` and a `resolver`
        // for it): the peers follow nginx's resolver at run time.
        // Peers `lb_api` may add: upstreams with nginx's `zone` (as NGINX Plus's API asks).
        let zoned = !(*us).shm_zone.is_null();
        let max_added = if zoned {
            (*conf)
                .method
                .max_added
                .unwrap_or(crate::balance::method::DEFAULT_MAX_ADDED)
        } else {
            0
        };
        if !zoned && (*conf).method.max_added.is_some() {
            let msg = format!(
                "lb_upstream: \"max_added\" in upstream \"{}\" needs the \"zone\" directive",
                bytes(&(*us).host).escape_ascii()
            );
            log_plain(cf, nginx_sys::NGX_LOG_EMERG as ngx_uint_t, &msg);
            return crate::shell::nginx::ERROR;
        }
        let servers = super::resolve::resolve_servers(rr);
        if servers > 0 || max_added > 0 {
            let max = (*conf)
                .method
                .max_resolved
                .unwrap_or(super::resolve::DEFAULT_MAX_RESOLVED);
            table.dynamic = Some(Box::new(super::resolve::Dynamic::new(
                super::resolve::Lists::Http(us),
                servers,
                max,
                max_added,
            )));
        }
        if servers == 0 && (*conf).method.max_resolved.is_some() {
            let msg = format!(
                "lb_upstream: \"max_resolved\" in upstream \"{}\" needs a server with \"resolve\"",
                bytes(&(*us).host).escape_ascii()
            );
            log_plain(cf, nginx_sys::NGX_LOG_EMERG as ngx_uint_t, &msg);
            return crate::shell::nginx::ERROR;
        }
        let table = ngx::core::Pool::from_ngx_pool((*cf).pool).allocate(table);
        if table.is_null() {
            return crate::shell::nginx::ERROR;
        }
        (*conf).upstream = table;
        (*us).peer.init = Some(super::pick::init_peer);

        let main = main_conf(cf);
        if main.is_null() {
            return crate::shell::nginx::ERROR;
        }
        (*main).upstreams.push(table);
    }
    crate::shell::nginx::OK
}

/// Runs after the upstream module's own `init_main_conf` (ours is a later module), i.e. after
/// every upstream's `init_upstream`: rejects upstreams where another method replaced ours,
/// creates the shared zone, and logs one line per upstream.
pub(crate) unsafe extern "C" fn init_main_conf(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: `conf` is our main conf; the upstream module's main conf lists every upstream.
    unsafe {
        let main = &mut *(conf as *mut MainConf);
        let ctx = (*cf).ctx as *mut ngx_http_conf_ctx_t;
        let index = (*ptr::addr_of!(ngx_http_upstream_module)).ctx_index;
        let umcf = *(*ctx).main_conf.add(index) as *const ngx_http_upstream_main_conf_t;
        let list = &(*umcf).upstreams;
        let uscfs = core::slice::from_raw_parts(
            list.elts as *const *mut ngx_http_upstream_srv_conf_t,
            list.nelts,
        );
        for &us in uscfs {
            let ours = srv_conf(us);
            if ours.is_null() {
                continue;
            }
            if !(*ours).enabled {
                // Directives that only mean something with `lb_upstream` in the same block.
                if let Some((name, why)) = (*ours).without_lb_upstream() {
                    let msg = format!(
                        "{name}: upstream \"{}\" has \"{name}\" but no \"lb_upstream\"{why}",
                        bytes(&(*us).host).escape_ascii()
                    );
                    log_plain(cf, NGX_LOG_EMERG as ngx_uint_t, &msg);
                    return CONF_ERROR;
                }
                continue;
            }
            let ours_init: ngx_http_upstream_init_peer_pt = Some(super::pick::init_peer);
            let wrapped = match ((*us).peer.init, ours_init) {
                (Some(a), Some(b)) => !core::ptr::fn_addr_eq(a, b),
                _ => true,
            };
            if (*ours).keepalive.is_some() && wrapped {
                let msg = format!(
                    "lb_keepalive: upstream \"{}\" also has \"keepalive\"; use one of them \
                     (lb_keepalive keeps idle connections per peer)",
                    bytes(&(*us).host).escape_ascii()
                );
                log_plain(cf, NGX_LOG_EMERG as ngx_uint_t, &msg);
                return CONF_ERROR;
            }
            if (*ours).upstream.is_null() {
                let msg = format!(
                    "lb_upstream: upstream \"{}\" also uses another load balancing method \
                     (\"least_conn\", \"hash\", \"ip_hash\" or \"random\") that replaced \
                     \"lb_upstream\" (set in {}:{}); use only one",
                    bytes(&(*us).host).escape_ascii(),
                    (*ours).file,
                    (*ours).line
                );
                log_plain(cf, NGX_LOG_EMERG as ngx_uint_t, &msg);
                return CONF_ERROR;
            }
        }
        if main.upstreams.is_empty() {
            return CONF_OK;
        }
        if zone::add(cf, main) != crate::shell::nginx::OK {
            return CONF_ERROR;
        }
        for &u in &main.upstreams {
            if (*u).kind == crate::shell::table::Kind::Http {
                log_notice(cf, &*u);
            }
        }
    }
    CONF_OK
}

/// The start-up line of one upstream: method, peers, checks.
///
/// # Safety
/// `cf` is the configuration being processed; `u`'s strings live in its pool.
pub(crate) unsafe fn log_notice(cf: *mut ngx_conf_t, u: &Upstream) {
    let m = u.current();
    let backups = m.peers.len() - m.primaries;
    let down = m.peers.iter().filter(|p| p.down).count();
    let checks = match &u.check {
        Some(c) => format!(
            "checks {} every {}ms (timeout {}ms, rise {}, fall {})",
            c.conf.kind.name(),
            c.conf.interval_ms,
            c.conf.timeout_ms,
            c.conf.rise,
            c.conf.fall
        ),
        None => "no active checks".to_string(),
    };
    let resolved = match &u.dynamic {
        Some(d) if d.servers > 0 => format!(
            ", {} resolved server(s) (up to {} addresses)",
            d.servers, d.max_resolved
        ),
        _ => String::new(),
    };
    let added = match &u.dynamic {
        Some(d) if d.max_added > 0 => format!(", up to {} added by lb_api", d.max_added),
        _ => String::new(),
    };
    let kind = match u.kind {
        crate::shell::table::Kind::Http => "",
        crate::shell::table::Kind::Stream => "stream ",
    };
    let msg = format!(
        "lb: {}upstream \"{}\": method {}, {} peers ({} backup, {} down){}{}, {}",
        kind,
        // SAFETY: the name is an nginx string from the configuration pool.
        unsafe { bytes(&u.name) }.escape_ascii(),
        u.method.name(),
        m.peers.len(),
        backups,
        down,
        resolved,
        added,
        checks
    );
    // SAFETY: as required by the caller.
    unsafe { log_plain(cf, NGX_LOG_NOTICE as ngx_uint_t, &msg) };
}
