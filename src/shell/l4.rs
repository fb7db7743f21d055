//! `stream {}` upstreams (TCP and UDP): `lb_upstream`, `lb_check`, `lb_panic`, `lb_outlier` and
//! `lb_slow_start` in `stream { upstream { ... } }`, the stream counterpart of
//! `shell::upstream` and `shell::pick::init_peer`.
//!
//! Everything below the nginx glue is shared with http: the peers become a
//! `shell::table::Upstream` (kind `Stream`) in the cycle's one `MainConf`, so they get their
//! records in the same zone, the same selection (`shell::pick::start`, `get_peer`,
//! `free_peer`), the same probes (`shell::probe`) and the same status; `server NAME resolve`
//! and peers added through `lb_api` follow nginx's stream lists with `shell::resolve`, as for
//! http (`shell::rr` reads both kinds of lists).
//!
//! **No link-time reference to nginx's stream code.** Debian's nginx has stream as a dynamic
//! module of its own (`ngx_stream_module.so`); a shared object that referred to one of its
//! symbols would fail to load into an nginx that does not load it (nginx opens modules with
//! `RTLD_NOW`). So this file uses nginx's stream types (layouts only) but looks up the three
//! symbols it needs (`ngx_stream_upstream_module`, `ngx_stream_upstream_init_round_robin`,
//! `ngx_stream_add_variable`) with `dlsym` when a `stream {}` block needs them: by then nginx
//! has loaded every module (`load_module` must precede the blocks). nginx calls this module's
//! hooks only from its stream block, so without stream the module is inert. Our checks run from
//! postconfiguration, not init_main_conf: with `ngx_stream_module.so` loaded after ours, our
//! module comes first among the stream modules.

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_int_t, ngx_module_t, ngx_stream_conf_ctx_t, ngx_stream_module_t,
    ngx_stream_session_t, ngx_stream_upstream_init_pt, ngx_stream_upstream_main_conf_t,
    ngx_stream_upstream_rr_peer_t, ngx_stream_upstream_rr_peers_t, ngx_stream_upstream_srv_conf_t,
    ngx_uint_t, NGX_CONF_ANY, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE12, NGX_LOG_EMERG,
    NGX_STREAM_MODULE, NGX_STREAM_UPS_CONF,
};

use super::conf::{log_plain, main_conf, SrvConf};
use super::table::{Addr, Kind, OwnedAddr, Peer, ServerLine, Upstream};
use crate::balance::method;
use crate::shell::nginx::{bytes, conf_error, directive_params, CONF_ERROR, CONF_OK};

/// `NGX_STREAM_SRV_CONF_OFFSET`.
const SRV_CONF_OFFSET: ngx_uint_t = core::mem::offset_of!(ngx_stream_conf_ctx_t, srv_conf);

static CTX: ngx_stream_module_t = ngx_stream_module_t {
    preconfiguration: None,
    postconfiguration: Some(postconfiguration),
    create_main_conf: Some(create_main_conf),
    init_main_conf: None,
    create_srv_conf: Some(create_srv_conf),
    merge_srv_conf: None,
};

const fn command(
    name: nginx_sys::ngx_str_t,
    args: u32,
    set: unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char,
) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: (NGX_STREAM_UPS_CONF | args) as ngx_uint_t,
        set: Some(set),
        conf: SRV_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    }
}

static mut COMMANDS: [ngx_command_t; 6] = [
    command(
        ngx::ngx_string!("lb_upstream"),
        NGX_CONF_NOARGS | NGX_CONF_TAKE12,
        set_lb_upstream,
    ),
    command(ngx::ngx_string!("lb_check"), NGX_CONF_ANY, set_lb_check),
    command(
        ngx::ngx_string!("lb_panic"),
        NGX_CONF_TAKE1,
        crate::shell::upstream::set_lb_panic,
    ),
    command(
        ngx::ngx_string!("lb_outlier"),
        NGX_CONF_ANY,
        crate::shell::upstream::set_lb_outlier,
    ),
    command(
        ngx::ngx_string!("lb_slow_start"),
        NGX_CONF_TAKE1,
        crate::shell::upstream::set_lb_slow_start,
    ),
    ngx_command_t::empty(),
];

/// The stream module: `lb_upstream`, `lb_check`, `lb_panic`, `lb_outlier`, `lb_slow_start` in
/// `stream { upstream {} }`.
#[used]
#[allow(non_upper_case_globals)]
#[cfg_attr(not(feature = "export-modules"), no_mangle)]
pub static mut ngx_stream_lb_module: ngx_module_t = ngx_module_t {
    ctx: ptr::addr_of!(CTX) as *mut c_void,
    commands: ptr::addr_of_mut!(COMMANDS) as *mut ngx_command_t,
    type_: NGX_STREAM_MODULE as ngx_uint_t,
    ..ngx_module_t::default()
};

fn module() -> &'static ngx_module_t {
    // SAFETY: nginx sets the module's indices while loading the configuration, before any of
    // our hooks runs; after that the static is only read.
    unsafe { &*ptr::addr_of!(ngx_stream_lb_module) }
}

/// A symbol of nginx's stream code, found in the running nginx (the binary, or
/// `ngx_stream_module.so` loaded before with `RTLD_GLOBAL`).
fn stream_symbol(name: &core::ffi::CStr) -> *mut c_void {
    // SAFETY: dlsym only reads the global symbol tables.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

/// nginx's `ngx_stream_upstream_module`.
fn upstream_module() -> Option<&'static ngx_module_t> {
    let p = stream_symbol(c"ngx_stream_upstream_module") as *const ngx_module_t;
    // SAFETY: the symbol is nginx's module structure, which lives as long as the process.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// nginx's `ngx_stream_upstream_init_round_robin`.
fn init_round_robin() -> ngx_stream_upstream_init_pt {
    let p = stream_symbol(c"ngx_stream_upstream_init_round_robin");
    if p.is_null() {
        return None;
    }
    // SAFETY: the symbol is that function, with this signature (ngx_stream_upstream_round_robin.h).
    Some(unsafe {
        core::mem::transmute::<
            *mut c_void,
            unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_stream_upstream_srv_conf_t) -> ngx_int_t,
        >(p)
    })
}

/// Our `SrvConf` for a stream upstream block, or null for the implicit upstreams of
/// `proxy_pass host:port`.
///
/// # Safety
/// `us` must be a live stream upstream configuration of the current cycle.
unsafe fn srv_conf(us: *const ngx_stream_upstream_srv_conf_t) -> *mut SrvConf {
    // SAFETY: as required by the caller; an upstream block has a srv_conf array with a slot
    // for every stream module.
    unsafe {
        let confs = (*us).srv_conf;
        if confs.is_null() {
            return ptr::null_mut();
        }
        *confs.add(module().ctx_index) as *mut SrvConf
    }
}

/// Registers `$lb_peer`, `$lb_peer_state` and `$lb_upstream` for stream sessions (nginx's
/// `ngx_stream_add_variable`, looked up as the other stream symbols). From postconfiguration,
/// not preconfiguration: with Debian's `ngx_stream_module.so` loaded after ours, our
/// preconfiguration would run before the stream core module's has made the variables' hash
/// (nginx would crash); variables added before `ngx_stream_variables_init_vars` are found by
/// `log_format` all the same.
unsafe fn add_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    type AddVariable = unsafe extern "C" fn(
        *mut ngx_conf_t,
        *mut nginx_sys::ngx_str_t,
        ngx_uint_t,
    ) -> *mut nginx_sys::ngx_stream_variable_t;
    let p = stream_symbol(c"ngx_stream_add_variable");
    if p.is_null() {
        return crate::shell::nginx::ERROR;
    }
    // SAFETY: the symbol is that function, with this signature (ngx_stream_variables.h).
    let add = unsafe { core::mem::transmute::<*mut c_void, AddVariable>(p) };
    for (name, which) in crate::shell::variables::VARIABLES {
        let mut n = nginx_sys::ngx_str_t {
            len: name.len(),
            data: name.as_ptr() as *mut u8,
        };
        // SAFETY: nginx copies the name; `get` is called with the `data` given here.
        unsafe {
            let v = add(
                cf,
                &mut n,
                nginx_sys::NGX_STREAM_VAR_NOCACHEABLE as ngx_uint_t,
            );
            if v.is_null() {
                return crate::shell::nginx::ERROR;
            }
            (*v).get_handler = Some(get_variable);
            (*v).data = which;
        }
    }
    crate::shell::nginx::OK
}

unsafe extern "C" fn get_variable(
    s: *mut ngx_stream_session_t,
    v: *mut nginx_sys::ngx_stream_variable_value_t,
    which: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes a live session and value; our context, when set, is the session's
    // `RequestPeers` (`init_peer`).
    unsafe {
        let rp = *(*s).ctx.add(module().ctx_index) as *const crate::shell::pick::RequestPeers;
        crate::shell::variables::value(rp, v, which)
    }
}

/// The stream block's main conf is the cycle's one `MainConf` (`conf::cycle_conf`).
unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: nginx calls this with the configuration being parsed.
    unsafe { main_conf(cf) as *mut c_void }
}

unsafe extern "C" fn create_srv_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: the configuration pool outlives the cycle's configuration and runs Drop.
    unsafe { ngx::core::Pool::from_ngx_pool((*cf).pool) }.allocate(SrvConf::default())
        as *mut c_void
}

/// `lb_upstream [round_robin | least_conn | p2c [decay=T]] [max_resolved=N] [max_added=N];` in a
/// stream upstream (`max_*` are checked in `init_upstream`, which knows the servers and zone).
unsafe extern "C" fn set_lb_upstream(
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
    let (Some(um), Some(_)) = (upstream_module(), init_round_robin()) else {
        // SAFETY: `cf` is the configuration being parsed.
        return unsafe {
            conf_error(
                cf,
                "lb_upstream: nginx's stream upstream code was not found in this nginx",
            )
        };
    };
    // SAFETY: inside a stream `upstream {}` the context's srv_conf array holds the stream
    // upstream module's configuration of this block.
    let uscf = unsafe {
        let ctx = (*cf).ctx as *mut ngx_stream_conf_ctx_t;
        &mut *(*(*ctx).srv_conf.add(um.ctx_index) as *mut ngx_stream_upstream_srv_conf_t)
    };
    if uscf.peer.init_upstream.is_some() {
        // SAFETY: `cf` is the configuration being parsed.
        return unsafe {
            conf_error(
                cf,
                &format!(
                    "lb_upstream: stream upstream \"{}\" already has a load balancing method; \
                     \"lb_upstream\" must come first in the block and cannot be combined with \
                     \"least_conn\", \"hash\" or \"random\"",
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

/// `lb_check` in a stream upstream: the http handler's parsing, then the types that make
/// sense for TCP/UDP peers.
unsafe extern "C" fn set_lb_check(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our own srv conf and the configuration being parsed.
    unsafe {
        let rv = crate::shell::check::set_lb_check(cf, cmd, conf);
        if rv != CONF_OK {
            return rv;
        }
        let conf = &mut *(conf as *mut SrvConf);
        let kind = conf.check.as_ref().map(|c| c.conf.kind);
        if let Some(k) = kind {
            if !k.for_stream() {
                return conf_error(
                    cf,
                    &format!(
                        "lb_check: \"type={}\" is not allowed in a stream upstream (use tcp, \
                         udp or tls)",
                        k.name()
                    ),
                );
            }
        }
    }
    CONF_OK
}

/// The stream upstream's `init_upstream`: nginx's round-robin code parses the `server` lines,
/// then our table is built from them.
unsafe extern "C" fn init_upstream(
    cf: *mut ngx_conf_t,
    us: *mut ngx_stream_upstream_srv_conf_t,
) -> ngx_int_t {
    // SAFETY: nginx calls this with the configuration and a live upstream block; the round-robin
    // lists live in the configuration pool.
    unsafe {
        let Some(rr_init) = init_round_robin() else {
            return crate::shell::nginx::ERROR;
        };
        if rr_init(cf, us) != crate::shell::nginx::OK {
            return crate::shell::nginx::ERROR;
        }
        let conf = srv_conf(us);
        let rr = (*us).peer.data as *const ngx_stream_upstream_rr_peers_t;
        if conf.is_null() || rr.is_null() {
            return crate::shell::nginx::ERROR;
        }
        let (peers, primaries) = peers_of(rr);
        let mut table =
            Upstream::from_peers((*us).host, Kind::Stream, (*conf).method, peers, primaries);
        table.check = (*conf).check.take();
        table.panic = (*conf).panic.map(crate::shell::table::Panic::new);
        table.outlier = (*conf).outlier;
        if let Some(ms) = (*conf).slow_start_ms {
            table.slow_start = Some(crate::shell::table::SlowStart {
                ms,
                next_eval_ms: 0,
            });
            for p in &mut table.current_mut().peers {
                p.ramp = crate::balance::slow_start::STEPS;
            }
        }
        // Peers that change at run time, as in http (`shell::upstream::init_upstream`): `server
        // NAME resolve` (nginx 1.27.3+, which requires `zone` and a `resolver` itself) and
        // peers `lb_api` may add (upstreams with `zone`). `shell::resolve` follows nginx's
        // stream lists as it follows the http ones (`shell::rr`).
        let zoned = !(*us).shm_zone.is_null();
        let method = (*conf).method;
        if !zoned && method.max_added.is_some() {
            let msg = format!(
                "lb_upstream: \"max_added\" in stream upstream \"{}\" needs the \"zone\" directive",
                bytes(&(*us).host).escape_ascii()
            );
            log_plain(cf, NGX_LOG_EMERG as ngx_uint_t, &msg);
            return crate::shell::nginx::ERROR;
        }
        let max_added = if zoned {
            method
                .max_added
                .unwrap_or(crate::balance::method::DEFAULT_MAX_ADDED)
        } else {
            0
        };
        let servers = crate::shell::resolve::resolve_servers(rr);
        if servers == 0 && method.max_resolved.is_some() {
            let msg = format!(
                "lb_upstream: \"max_resolved\" in stream upstream \"{}\" needs a server with \
                 \"resolve\"",
                bytes(&(*us).host).escape_ascii()
            );
            log_plain(cf, NGX_LOG_EMERG as ngx_uint_t, &msg);
            return crate::shell::nginx::ERROR;
        }
        if servers > 0 || max_added > 0 {
            let max = method
                .max_resolved
                .unwrap_or(crate::shell::resolve::DEFAULT_MAX_RESOLVED);
            table.dynamic = Some(Box::new(crate::shell::resolve::Dynamic::new(
                crate::shell::resolve::Lists::Stream(us),
                servers,
                max,
                max_added,
            )));
        }
        let table = ngx::core::Pool::from_ngx_pool((*cf).pool).allocate(table);
        if table.is_null() {
            return crate::shell::nginx::ERROR;
        }
        (*conf).upstream = table;
        (*us).peer.init = Some(init_peer);
        let main = main_conf(cf);
        if main.is_null() {
            return crate::shell::nginx::ERROR;
        }
        (*main).upstreams.push(table);
    }
    crate::shell::nginx::OK
}

/// The peers of nginx's stream round-robin lists (primaries, then the backup list), and how
/// many are primaries.
///
/// # Safety
/// `rr` must be the lists `ngx_stream_upstream_init_round_robin` just built.
unsafe fn peers_of(rr: *const ngx_stream_upstream_rr_peers_t) -> (Vec<Peer>, usize) {
    let mut peers = Vec::new();
    let mut primaries = 0;
    let mut list = rr;
    let mut backup = false;
    // SAFETY: as required by the caller.
    unsafe {
        while !list.is_null() {
            let mut p: *const ngx_stream_upstream_rr_peer_t = (*list).peer;
            while !p.is_null() {
                let q = &*p;
                // A copy of the address and texts: `Addr`'s reference form points at http's
                // round-robin peer type only (stream upstreams are small; a copy costs little).
                let addr = Addr::owned(OwnedAddr::new(
                    q.sockaddr,
                    q.socklen,
                    bytes(&q.name),
                    bytes(&q.server),
                ));
                let mut peer = Peer::configured(ServerLine {
                    addr,
                    weight: q.weight as i64,
                    max_fails: q.max_fails as u64,
                    fail_timeout_s: q.fail_timeout,
                    max_conns: q.max_conns as u64,
                    down: q.down != 0,
                    backup,
                });
                peer.set_slot(peers.len());
                peers.push(peer);
                p = q.next;
            }
            if !backup {
                primaries = peers.len();
            }
            backup = true;
            list = (*list).next;
        }
    }
    (peers, primaries)
}

/// `us->peer.init` of a stream upstream: per-session setup (the session's pool holds it).
unsafe extern "C" fn init_peer(
    s: *mut ngx_stream_session_t,
    us: *mut ngx_stream_upstream_srv_conf_t,
) -> ngx_int_t {
    // SAFETY: nginx calls this with a live session that has an upstream, and our upstream's
    // configuration.
    unsafe {
        let conf = srv_conf(us);
        if conf.is_null() || (*conf).upstream.is_null() {
            return crate::shell::nginx::ERROR;
        }
        let u = (*s).upstream;
        let rp = crate::shell::pick::start(
            (*conf).upstream,
            (*(*s).connection).pool,
            &mut (*u).peer,
            ptr::null_mut(),
        );
        if rp.is_null() {
            return crate::shell::nginx::ERROR;
        }
        *(*s).ctx.add(module().ctx_index) = rp as *mut c_void;
    }
    crate::shell::nginx::OK
}

/// After every stream module's `init_main_conf`, so after the stream upstream module's, which
/// runs each upstream's `init_upstream` (a postconfiguration hook: with Debian's
/// `ngx_stream_module.so` loaded after ours, our module comes first in the stream modules'
/// order): refuses upstreams where another method replaced ours or directives that need
/// `lb_upstream`, then declares (or grows) the shared zone and logs one line per upstream.
unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: called in the stream block's context, before nginx resolves the variables.
    if unsafe { add_variables(cf) } != crate::shell::nginx::OK {
        return crate::shell::nginx::ERROR;
    }
    // SAFETY: as above.
    match unsafe { check_upstreams(cf) } {
        rv if rv == CONF_OK => crate::shell::nginx::OK,
        _ => crate::shell::nginx::ERROR,
    }
}

/// `postconfiguration`'s work.
///
/// # Safety
/// `cf` is the stream block's configuration.
unsafe fn check_upstreams(cf: *mut ngx_conf_t) -> *mut c_char {
    // SAFETY: the cycle's MainConf; the stream upstream module's main conf lists every stream
    // upstream.
    unsafe {
        let main = main_conf(cf);
        if main.is_null() {
            return CONF_ERROR;
        }
        let main = &mut *main;
        let Some(um) = upstream_module() else {
            return CONF_OK;
        };
        let ctx = (*cf).ctx as *mut ngx_stream_conf_ctx_t;
        let umcf = *(*ctx).main_conf.add(um.ctx_index) as *const ngx_stream_upstream_main_conf_t;
        if umcf.is_null() {
            return CONF_OK;
        }
        let list = &(*umcf).upstreams;
        let uscfs = if list.nelts == 0 {
            &[][..]
        } else {
            core::slice::from_raw_parts(
                list.elts as *const *mut ngx_stream_upstream_srv_conf_t,
                list.nelts,
            )
        };
        let mut ours_here = 0;
        for &us in uscfs {
            let ours = srv_conf(us);
            if ours.is_null() {
                continue;
            }
            if !(*ours).enabled {
                if let Some((name, why)) = (*ours).without_lb_upstream() {
                    let msg = format!(
                        "{name}: stream upstream \"{}\" has \"{name}\" but no \"lb_upstream\"{why}",
                        bytes(&(*us).host).escape_ascii()
                    );
                    log_plain(cf, NGX_LOG_EMERG as ngx_uint_t, &msg);
                    return CONF_ERROR;
                }
                continue;
            }
            if (*ours).upstream.is_null() {
                let msg = format!(
                    "lb_upstream: stream upstream \"{}\" also uses another load balancing \
                     method (\"least_conn\", \"hash\" or \"random\") that replaced \
                     \"lb_upstream\" (set in {}:{}); use only one",
                    bytes(&(*us).host).escape_ascii(),
                    (*ours).file,
                    (*ours).line
                );
                log_plain(cf, NGX_LOG_EMERG as ngx_uint_t, &msg);
                return CONF_ERROR;
            }
            ours_here += 1;
        }
        if ours_here == 0 {
            return CONF_OK;
        }
        if crate::shell::zone::add(cf, main) != crate::shell::nginx::OK {
            return CONF_ERROR;
        }
        for &u in &main.upstreams {
            if (*u).kind == Kind::Stream {
                crate::shell::upstream::log_notice(cf, &*u);
            }
        }
    }
    CONF_OK
}
