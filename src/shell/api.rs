//! The nginx side of `lb_api [write=on];`: a content handler that reads the request (the body
//! only for writes, at most `api::MAX_BODY` bytes, in memory), lets `crate::api` say what it
//! asks for, carries it out on the shared records and answers JSON. Access control is nginx's
//! own (`allow`/`deny`, `auth_basic`); the module opens nothing by itself.

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_http_conf_ctx_t, ngx_http_core_loc_conf_t, ngx_http_core_module,
    ngx_http_discard_request_body, ngx_http_finalize_request, ngx_http_read_client_request_body,
    ngx_http_request_t, ngx_int_t, ngx_uint_t, NGX_LOG_NOTICE,
};

use crate::api::{self, ApiError, Method, Op};
use crate::shell::conf::{ctx_index, MainConf};
use crate::shell::nginx::{bytes, conf_error, directive_params, CONF_OK};
use crate::shell::status::{send, snapshot_upstream};
use crate::shell::table::Upstream;

const JSON: &str = "application/json";

/// `lb_api [write=on|off];`: makes its location answer the API (read-only unless write=on).
///
/// # Safety
/// Called by nginx with the configuration being parsed (location context).
pub unsafe extern "C" fn set_lb_api(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: in a location, the context's loc_conf array holds the core module's conf.
    unsafe {
        let write = match directive_params(cf).as_slice() {
            [] | [b"write=off"] => false,
            [b"write=on"] => true,
            [other, ..] => {
                return conf_error(
                    cf,
                    &format!(
                        "lb_api: invalid parameter \"{}\" (expected write=on or write=off)",
                        other.escape_ascii()
                    ),
                )
            }
        };
        let ctx = (*cf).ctx as *mut ngx_http_conf_ctx_t;
        let index = (*ptr::addr_of!(ngx_http_core_module)).ctx_index;
        let clcf = *(*ctx).loc_conf.add(index) as *mut ngx_http_core_loc_conf_t;
        if (*clcf).handler.is_some() {
            return conf_error(cf, "lb_api: the location already has a content handler");
        }
        (*clcf).handler = Some(if write { handler_rw } else { handler_ro });
    }
    CONF_OK
}

/// `lb_state PATH;` (http): where `lb_api`'s changes are kept across restarts (relative paths
/// are relative to nginx's prefix). Worker processes write it: its directory must be writable
/// by nginx's `user`.
///
/// # Safety
/// Called by nginx with the configuration being parsed and our main conf.
pub unsafe extern "C" fn set_lb_state(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes our main conf; the argument is an nginx string of the pool;
    // ngx_conf_full_name rewrites it to a pool copy relative to the prefix.
    unsafe {
        let main = &mut *(conf as *mut MainConf);
        if main.state_path.is_some() {
            return conf_error(cf, "\"lb_state\" directive is duplicate");
        }
        let args = (*(*cf).args).elts as *mut nginx_sys::ngx_str_t;
        let mut name = *args.add(1);
        if name.len == 0 {
            return conf_error(cf, "lb_state: empty path");
        }
        if nginx_sys::ngx_conf_full_name((*cf).cycle, &mut name, 0) != crate::shell::nginx::OK {
            return conf_error(cf, "lb_state: cannot resolve the path");
        }
        use std::os::unix::ffi::OsStrExt;
        main.state_path = Some(std::ffi::OsStr::from_bytes(bytes(&name)).into());
    }
    CONF_OK
}

/// Writes the state file (after a change): every peer whose admin state or weight an operator
/// set, written to a temporary file and renamed over the old one, so that a reader never sees
/// half a file. A failure is logged; the change stays in effect in shared memory.
///
/// # Safety
/// In a worker, with its main conf.
unsafe fn save_state(main: &MainConf, log: *mut nginx_sys::ngx_log_t) {
    if main.state_path.is_none() || main.pool.is_null() {
        return;
    }
    // One writer at a time (workers that change peers at once would otherwise rename older
    // snapshots over newer ones): the zone's mutex, which nginx's master releases for a
    // worker that dies holding it.
    // SAFETY: the zone's slab pool is mapped for the life of the process.
    unsafe { nginx_sys::ngx_shmtx_lock(ptr::addr_of_mut!((*main.pool).mutex)) };
    // SAFETY: as required by the caller.
    unsafe { write_state(main, log) };
    // SAFETY: as above.
    unsafe { nginx_sys::ngx_shmtx_unlock(ptr::addr_of_mut!((*main.pool).mutex)) };
}

/// `save_state`'s work, under the zone's mutex.
///
/// # Safety
/// As for `save_state`.
unsafe fn write_state(main: &MainConf, log: *mut nginx_sys::ngx_log_t) {
    let Some(path) = &main.state_path else {
        return;
    };
    let mut peers = Vec::new();
    for &u in &main.upstreams {
        // SAFETY: the tables live for the cycle; records are mapped for the process.
        let u = unsafe { &*u };
        for p in &u.current().peers {
            // SAFETY: as above.
            let s = unsafe { &*p.shared };
            let admin = api::Admin::from_code(s.admin());
            let weight = s.weight_override();
            if admin == api::Admin::Up && weight.is_none() {
                continue;
            }
            peers.push(api::state::SavedPeer {
                // SAFETY: nginx strings of the configuration, or a snapshot's copies.
                upstream: String::from_utf8_lossy(unsafe { bytes(&u.name) }).into_owned(),
                // SAFETY: as above.
                address: String::from_utf8_lossy(unsafe { bytes(&p.name) }).into_owned(),
                admin,
                weight,
                line: s.line(),
            });
        }
    }
    let text = api::state::render(peers);
    let mut tmp = path.clone().into_os_string();
    tmp.push(format!(".{}.tmp", crate::shell::nginx::pid()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(&text)?;
        // On disk before it replaces the old file: a crash never leaves an empty one.
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    let result = write();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        ngx::ngx_log_error!(
            nginx_sys::NGX_LOG_ERR,
            log,
            "lb_state: cannot write \"{}\": {} (the change is in effect, but not kept over a restart)",
            path.display(),
            e
        );
    }
}

/// The largest state file read.
const STATE_MAX: u64 = 16 << 20;

/// Brings back the changes of the state file when nginx starts with a fresh zone (in the
/// master, from `shell::zone::commit`). A missing file is nothing to restore; an unreadable,
/// corrupt or foreign one is reported and ignored: nginx starts with the configuration. A
/// change to a peer whose `server` line changed since is dropped (the configuration wins).
///
/// # Safety
/// The committed configuration's main conf, before workers start.
pub unsafe fn restore_state(main: &mut MainConf) {
    let Some(path) = main.state_path.clone() else {
        return;
    };
    // SAFETY: the cycle's log is live while a configuration is committed.
    let log = unsafe { (*nginx_sys::ngx_cycle).log };
    let read = || -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let f = std::fs::File::open(&path)?;
        let meta = f.metadata()?;
        if !meta.is_file() || meta.len() > STATE_MAX {
            return Err(std::io::Error::other(format!(
                "not a regular file of at most {STATE_MAX} bytes"
            )));
        }
        let mut text = Vec::new();
        f.take(STATE_MAX).read_to_end(&mut text)?;
        Ok(text)
    };
    let text = match read() {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            ngx::ngx_log_error!(
                nginx_sys::NGX_LOG_WARN,
                log,
                "lb_state: cannot read \"{}\": {}; starting with the configuration",
                path.display(),
                e
            );
            return;
        }
    };
    let file = match api::state::parse(&text) {
        Ok(f) => f,
        Err(e) => {
            ngx::ngx_log_error!(
                nginx_sys::NGX_LOG_WARN,
                log,
                "lb_state: ignoring \"{}\": {}; starting with the configuration",
                path.display(),
                e
            );
            return;
        }
    };
    let (mut restored, mut dropped, mut unmatched) = (0, 0, 0);
    for saved in &file.peers {
        let before = restored + dropped;
        for &u in &main.upstreams {
            // SAFETY: the tables of the committed configuration, their records claimed.
            let u = unsafe { &*u };
            // SAFETY: as above.
            if unsafe { bytes(&u.name) } != saved.upstream.as_bytes() {
                continue;
            }
            for p in &u.current().peers {
                // SAFETY: as above.
                if unsafe { bytes(&p.name) } != saved.address.as_bytes() {
                    continue;
                }
                // SAFETY: as above.
                let s = unsafe { &*p.shared };
                if s.line() != saved.line {
                    dropped += 1;
                    continue;
                }
                s.set_admin(saved.admin.code());
                s.set_weight(saved.weight);
                restored += 1;
            }
        }
        if restored + dropped == before {
            unmatched += 1;
        }
    }
    for &u in &main.upstreams {
        // SAFETY: no worker of this configuration runs yet; the upstream is the only holder
        // of its snapshot.
        unsafe { (*u).reweigh() };
    }
    let mut dropped_text = String::new();
    if dropped > 0 {
        dropped_text += &format!(", {dropped} dropped: the configuration changed those peers");
    }
    if unmatched > 0 {
        dropped_text += &format!(
            ", {unmatched} for no such peer now (resolved addresses are not known yet at start)"
        );
    }
    ngx::ngx_log_error!(
        NGX_LOG_NOTICE,
        log,
        "lb_state: restored {} peer change(s) from \"{}\"{}",
        restored,
        path.display(),
        dropped_text
    );
}

unsafe extern "C" fn handler_ro(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    unsafe { handle(r, false) }
}

unsafe extern "C" fn handler_rw(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: as above.
    unsafe { handle(r, true) }
}

fn method_of(m: ngx_uint_t) -> Method {
    let m = m as u32;
    if m == nginx_sys::NGX_HTTP_GET {
        Method::Get
    } else if m == nginx_sys::NGX_HTTP_HEAD {
        Method::Head
    } else if m == nginx_sys::NGX_HTTP_PATCH {
        Method::Patch
    } else {
        Method::Other
    }
}

unsafe fn handle(r: *mut ngx_http_request_t, write: bool) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request (a subrequest is refused).
    unsafe {
        if r != (*r).main {
            return nginx_sys::NGX_HTTP_NOT_ALLOWED as ngx_int_t;
        }
        let method = method_of((*r).method);
        if method == Method::Patch && write {
            if (*r).headers_in.content_length_n > api::MAX_BODY as i64 {
                let e = ApiError::new(
                    413,
                    format!("the body is larger than {} bytes", api::MAX_BODY),
                );
                let _ = ngx_http_discard_request_body(r);
                return send(r, 413, JSON, e.body());
            }
            let rc = ngx_http_read_client_request_body(r, Some(body_read));
            if rc >= nginx_sys::NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
                return rc;
            }
            return nginx_sys::NGX_DONE as ngx_int_t;
        }
        let rc = ngx_http_discard_request_body(r);
        if rc != crate::shell::nginx::OK {
            return rc;
        }
        respond(r, method, write, &[])
    }
}

/// nginx read the body of a write: answer, then finalise the request.
unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls this with the request whose body it read (`body_of` refuses one
    // kept in a file).
    unsafe {
        let rc = match body_of(r) {
            Ok(body) => respond(r, Method::Patch, true, &body),
            Err(e) => send(r, e.status as usize, JSON, e.body()),
        };
        ngx_http_finalize_request(r, rc);
    }
}

/// The request body, from memory.
unsafe fn body_of(r: *mut ngx_http_request_t) -> Result<Vec<u8>, ApiError> {
    let too_big = || {
        ApiError::new(
            413,
            format!("the body is larger than {} bytes", api::MAX_BODY),
        )
    };
    let mut body = Vec::new();
    // SAFETY: the request body's buffers, as nginx left them after reading.
    unsafe {
        let rb = (*r).request_body;
        if rb.is_null() {
            return Ok(body);
        }
        let mut cl = (*rb).bufs;
        while !cl.is_null() {
            let b = (*cl).buf;
            if !b.is_null() {
                if (*b).in_file() != 0 {
                    return Err(too_big());
                }
                let len = (*b).last.offset_from((*b).pos).max(0) as usize;
                if body.len() + len > api::MAX_BODY {
                    return Err(too_big());
                }
                body.extend_from_slice(core::slice::from_raw_parts((*b).pos, len));
            }
            cl = (*cl).next;
        }
    }
    Ok(body)
}

/// The request's path below the location's prefix.
unsafe fn relative_path<'a>(r: *mut ngx_http_request_t) -> &'a [u8] {
    // SAFETY: the request's uri and its location's configuration live as long as the request.
    unsafe {
        let uri = bytes(&(*r).uri);
        let index = (*ptr::addr_of!(ngx_http_core_module)).ctx_index;
        let clcf = *(*r).loc_conf.add(index) as *const ngx_http_core_loc_conf_t;
        let prefix = if clcf.is_null() {
            &[][..]
        } else {
            bytes(&(*clcf).name)
        };
        uri.strip_prefix(prefix).unwrap_or(uri)
    }
}

unsafe fn respond(
    r: *mut ngx_http_request_t,
    method: Method,
    write: bool,
    body: &[u8],
) -> ngx_int_t {
    // SAFETY: a live request; our main conf belongs to its http block; tables and records
    // live as long as the cycle.
    unsafe {
        let op = match api::parse(method, relative_path(r), write, body) {
            Ok(op) => op,
            Err(e) => return send(r, e.status as usize, JSON, e.body()),
        };
        let main = *(*r).main_conf.add(ctx_index()) as *const MainConf;
        let upstreams: &[*mut Upstream] = if main.is_null() {
            &[]
        } else {
            &(*main).upstreams
        };
        // This worker may have served no proxied request since the last change: bring its
        // view up to date first (weights set through the API, resolved peers).
        for &u in upstreams {
            if (*u).records_ready {
                (*u).follow_weights();
                crate::shell::resolve::refresh(&mut *u);
            }
        }
        let find_mut = |name: &str| {
            upstreams
                .iter()
                .copied()
                .find(|&u| bytes(&(*u).name) == name.as_bytes())
        };
        let find = |name: &str| find_mut(name).map(|u| &*u);
        let now = crate::shell::nginx::now_ms();
        let wall = crate::shell::status::wall_ms();
        let result: Result<(usize, Vec<u8>), ApiError> = match op {
            Op::ListUpstreams => {
                let all: Vec<_> = upstreams
                    .iter()
                    .map(|&u| snapshot_upstream(&*u, now, wall))
                    .collect();
                Ok((200, serde_json::to_vec(&all).unwrap_or_default()))
            }
            Op::GetUpstream(name) => match find(&name) {
                Some(u) => Ok((
                    200,
                    serde_json::to_vec(&snapshot_upstream(u, now, wall)).unwrap_or_default(),
                )),
                None => Err(ApiError::new(404, format!("unknown upstream \"{name}\""))),
            },
            Op::GetPeer { upstream, address } => {
                peer_json(find(&upstream), &upstream, &address, now, wall)
            }
            Op::PatchPeer {
                upstream,
                address,
                patch,
            } => {
                let Some(uptr) = find_mut(&upstream) else {
                    return send(
                        r,
                        404,
                        JSON,
                        ApiError::new(404, format!("unknown upstream \"{upstream}\"")).body(),
                    );
                };
                let u = &*uptr;
                let peers: Vec<_> = u
                    .current()
                    .peers
                    .iter()
                    .filter(|p| bytes(&p.name) == address.as_bytes())
                    .collect();
                if peers.iter().any(|p| p.record == usize::MAX) {
                    return send(
                        r,
                        409,
                        JSON,
                        ApiError::new(
                            409,
                            format!(
                                "peer \"{address}\" has no room in zone \"ngx_http_lb\" (its \
                                 state is private to each worker until a reload finds room): \
                                 it cannot be changed for all workers"
                            ),
                        )
                        .body(),
                    );
                }
                if peers.is_empty() {
                    return send(
                        r,
                        404,
                        JSON,
                        ApiError::new(
                            404,
                            format!("no peer \"{address}\" in upstream \"{upstream}\""),
                        )
                        .body(),
                    );
                }
                if let Some(w) = patch.weight {
                    for p in &peers {
                        let before = (*p.shared).set_weight(w);
                        let now = w.unwrap_or(p.conf_weight);
                        if before.unwrap_or(p.conf_weight) != now {
                            ngx::ngx_log_error!(
                                NGX_LOG_NOTICE,
                                (*(*r).connection).log,
                                "lb: api: peer {} in upstream \"{}\" set to weight {}{} by {}",
                                address.escape_default(),
                                upstream.escape_default(),
                                now,
                                if w.is_none() { " (configured)" } else { "" },
                                bytes(&(*(*r).connection).addr_text).escape_ascii()
                            );
                        }
                    }
                    // Every worker rebuilds its selection state at its next request.
                    if !(*main).table.is_null() {
                        (*(*main).table)
                            .weights
                            .fetch_add(1, core::sync::atomic::Ordering::Release);
                    }
                }
                if let Some(admin) = patch.admin {
                    let default_up = u.check.as_ref().is_none_or(|c| c.conf.default_up);
                    for p in &peers {
                        let before = (*p.shared).set_admin(admin.code());
                        if before == api::Admin::Down.code() && admin != api::Admin::Down {
                            // Checks stopped while it was down: what they said then is old
                            // news; start over from default= and probe at once.
                            (*p.shared).recheck(default_up);
                        }
                        if before != admin.code() {
                            ngx::ngx_log_error!(
                                NGX_LOG_NOTICE,
                                (*(*r).connection).log,
                                "lb: api: peer {} in upstream \"{}\" set to {} by {}",
                                address.escape_default(),
                                upstream.escape_default(),
                                admin.name(),
                                bytes(&(*(*r).connection).addr_text).escape_ascii()
                            );
                        }
                    }
                }
                save_state(&*main, (*(*r).connection).log);
                // This worker's own view first, so that the answer shows the new weight.
                (*uptr).follow_weights();
                peer_json(Some(&*uptr), &upstream, &address, now, wall)
            }
        };
        match result {
            Ok((status, json)) => send(r, status, JSON, json),
            Err(e) => send(r, e.status as usize, JSON, e.body()),
        }
    }
}

/// The status object of peer `address` in `u`.
fn peer_json(
    u: Option<&Upstream>,
    upstream: &str,
    address: &str,
    now: u64,
    wall: u64,
) -> Result<(usize, Vec<u8>), ApiError> {
    let u = u.ok_or_else(|| ApiError::new(404, format!("unknown upstream \"{upstream}\"")))?;
    let snap = snapshot_upstream(u, now, wall);
    let peer = snap
        .peers
        .iter()
        .find(|p| p.address == address)
        .ok_or_else(|| {
            ApiError::new(
                404,
                format!("no peer \"{address}\" in upstream \"{upstream}\""),
            )
        })?;
    Ok((200, serde_json::to_vec(peer).unwrap_or_default()))
}
