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
use crate::shell::status::{send, snapshot_peer, Live};
use crate::shell::stream::Rendering;
use crate::shell::table::Kind;
use crate::shell::table::{Peer, Upstream};
use crate::shm::added;
use crate::status::json;
use crate::status::stream::Render;

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
    let Some(path) = &main.state_path else {
        return;
    };
    // One writer at a time, from taking the snapshot to the rename (workers that change peers
    // at once would otherwise rename older snapshots over newer ones): an exclusive `flock`
    // on PATH.lock, which the kernel drops if the worker dies. Only writers wait for it; the
    // zone's mutex, which every worker takes to follow added peers, is held only while the
    // snapshot is taken, not while the file is written and synced.
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".lock");
    let lock = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock_path)
    };
    let lock = match lock {
        Ok(f) => f,
        Err(e) => {
            ngx::ngx_log_error!(
                nginx_sys::NGX_LOG_ERR,
                log,
                "lb_state: cannot open \"{}\": {} (the change is in effect, but not kept over \
                 a restart)",
                std::path::Path::new(&lock_path).display(),
                e
            );
            return;
        }
    };
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this function owns; released when `lock` is closed.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    // SAFETY: the zone's slab pool is mapped for the life of the process; `render_state`
    // only reads under it.
    let text = unsafe {
        nginx_sys::ngx_shmtx_lock(ptr::addr_of_mut!((*main.pool).mutex));
        let text = render_state(main);
        nginx_sys::ngx_shmtx_unlock(ptr::addr_of_mut!((*main.pool).mutex));
        text
    };
    write_state(path, &text, log);
    drop(lock);
}

/// The state file's contents, under the zone's mutex.
///
/// # Safety
/// As for `save_state`.
unsafe fn render_state(main: &MainConf) -> Vec<u8> {
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
                kind: saved_kind(u.kind),
                // SAFETY: as above.
                address: String::from_utf8_lossy(unsafe { bytes(p.name()) }).into_owned(),
                admin,
                weight,
                line: s.line(),
            });
        }
    }
    // SAFETY: as required by the caller.
    let added = unsafe { saved_added(main) };
    api::state::render(peers, added)
}

/// The state file's name for an upstream's kind.
fn saved_kind(k: Kind) -> api::state::Kind {
    match k {
        Kind::Http => api::state::Kind::Http,
        Kind::Stream => api::state::Kind::Stream,
    }
}

/// An upstream's kind from the state file's name for it.
fn table_kind(k: api::state::Kind) -> Kind {
    match k {
        api::state::Kind::Http => Kind::Http,
        api::state::Kind::Stream => Kind::Stream,
    }
}

/// Writes the state file: a temporary file, synced, renamed over the old one. A failure is
/// logged; the change stays in effect in shared memory.
fn write_state(path: &std::path::Path, text: &[u8], log: *mut nginx_sys::ngx_log_t) {
    let mut tmp = path.as_os_str().to_owned();
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
        f.write_all(text)?;
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

/// The added peers, for the state file (the zone's mutex is held).
///
/// # Safety
/// As for `save_state`, under the zone's mutex.
unsafe fn saved_added(main: &MainConf) -> Vec<api::state::SavedAdded> {
    if main.table.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    // SAFETY: the caller holds the zone's mutex; the tables live for the cycle.
    unsafe {
        let t = crate::shm::table::Table::from_header(main.table);
        let entries = t.added();
        for &u in &main.upstreams {
            // Filed under the kind's name: an http and a stream upstream may share a name.
            let name = bytes(&(*u).name);
            for e in added::of(entries, added::upstream_key(&(*u).key_name())) {
                out.push(api::state::SavedAdded {
                    upstream: String::from_utf8_lossy(name).into_owned(),
                    kind: saved_kind((*u).kind),
                    address: String::from_utf8_lossy(e.name()).into_owned(),
                    weight: e.weight,
                    backup: e.backup != 0,
                    max_conns: e.max_conns,
                    max_fails: e.max_fails,
                    fail_timeout_ms: e.fail_timeout_ms,
                });
            }
        }
    }
    out
}

/// A socket address as the bytes of a `struct sockaddr_in` or `sockaddr_in6`.
fn sockaddr_bytes(a: &std::net::SocketAddr) -> Vec<u8> {
    use std::net::SocketAddr;
    fn raw<T>(v: &T) -> Vec<u8> {
        // SAFETY: a plain C struct, read as bytes for its whole size.
        unsafe {
            core::slice::from_raw_parts(v as *const T as *const u8, core::mem::size_of::<T>())
        }
        .to_vec()
    }
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: all-zero bytes are a valid sockaddr_in.
            let mut sin: libc::sockaddr_in = unsafe { core::mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            raw(&sin)
        }
        SocketAddr::V6(v6) => {
            // SAFETY: all-zero bytes are a valid sockaddr_in6.
            let mut sin6: libc::sockaddr_in6 = unsafe { core::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_scope_id = v6.scope_id();
            raw(&sin6)
        }
    }
}

/// Files an added peer in the zone (under its mutex) and bumps the change counter. `upstream`
/// is the upstream's `key_name` (its name, behind a prefix for a stream upstream).
///
/// # Safety
/// `main` is this process's main conf with its table.
unsafe fn file_added(
    main: &MainConf,
    upstream: &[u8],
    max: usize,
    peer: &api::NewPeer,
) -> Result<(), added::AddError> {
    let name = peer.name();
    let sa = sockaddr_bytes(&peer.address);
    let spec = added::PeerSpec {
        name: name.as_bytes(),
        sockaddr: &sa,
        weight: peer.weight,
        max_fails: peer.max_fails,
        fail_timeout_ms: peer.fail_timeout_ms,
        max_conns: peer.max_conns,
        backup: peer.backup,
    };
    let entry = added::AddedPeer::new(added::upstream_key(upstream), &spec)
        .expect("an IP address and port fits");
    // SAFETY: the zone's mutex guards the entries; the header stays mapped.
    unsafe {
        let t = crate::shm::table::Table::from_header(main.table);
        nginx_sys::ngx_shmtx_lock(ptr::addr_of_mut!((*main.pool).mutex));
        let r = added::insert(t.added(), entry, max);
        if r.is_ok() {
            (*main.table)
                .added
                .fetch_add(1, core::sync::atomic::Ordering::Release);
        }
        nginx_sys::ngx_shmtx_unlock(ptr::addr_of_mut!((*main.pool).mutex));
        r.map(|_| ())
    }
}

/// Removes an added peer from the zone; whether it was there. `upstream` as for `file_added`.
///
/// # Safety
/// As for `file_added`.
unsafe fn unfile_added(main: &MainConf, upstream: &[u8], address: &[u8]) -> bool {
    // SAFETY: as in `file_added`.
    unsafe {
        let t = crate::shm::table::Table::from_header(main.table);
        nginx_sys::ngx_shmtx_lock(ptr::addr_of_mut!((*main.pool).mutex));
        let removed = added::remove(t.added(), added::upstream_key(upstream), address);
        if removed {
            (*main.table)
                .added
                .fetch_add(1, core::sync::atomic::Ordering::Release);
        }
        nginx_sys::ngx_shmtx_unlock(ptr::addr_of_mut!((*main.pool).mutex));
        removed
    }
}

/// The largest state file read.
const STATE_MAX: u64 = 16 << 20;

/// Reads the state file when nginx starts with a fresh zone (in the master, from
/// `shell::zone::commit`). A missing file is nothing to restore; an unreadable, corrupt or
/// foreign one is reported and ignored: nginx starts with the configuration.
///
/// # Safety
/// The committed configuration's main conf, before workers start.
pub unsafe fn read_state(main: &MainConf) -> Option<api::state::StateFile> {
    let path = main.state_path.clone()?;
    let log = main.log();
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
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            ngx::ngx_log_error!(
                nginx_sys::NGX_LOG_WARN,
                log,
                "lb_state: cannot read \"{}\": {}; starting with the configuration",
                path.display(),
                e
            );
            return None;
        }
    };
    match api::state::parse(&text) {
        Ok(f) => Some(f),
        Err(e) => {
            ngx::ngx_log_error!(
                nginx_sys::NGX_LOG_WARN,
                log,
                "lb_state: ignoring \"{}\": {}; starting with the configuration",
                path.display(),
                e
            );
            None
        }
    }
}

/// Files the added peers of the state file again (before the upstreams build their peers),
/// except those of upstreams that take no added peers now and addresses the configuration
/// has. Returns how many.
///
/// # Safety
/// As for `read_state`, with the zone's table.
pub unsafe fn restore_added(main: &MainConf, file: &api::state::StateFile) -> usize {
    if main.table.is_null() {
        return 0;
    }
    let log = main.log();
    let takers = crate::shell::zone::added_takers(main);
    let (mut refused, mut restored) = (0, 0);
    for a in &file.added {
        let Ok(address) = a.address.parse() else {
            refused += 1;
            continue;
        };
        // Not for an upstream that takes added peers now, or an address it has configured:
        // the configuration wins (and the entry must not take room from others).
        let key_name = table_kind(a.kind).key_name(a.upstream.as_bytes());
        let Some((max, configured)) = takers.get(&added::upstream_key(&key_name)) else {
            continue;
        };
        if configured.contains(a.address.as_bytes()) {
            continue;
        }
        let peer = api::NewPeer {
            address,
            weight: a.weight,
            backup: a.backup,
            max_conns: a.max_conns,
            max_fails: a.max_fails,
            fail_timeout_ms: a.fail_timeout_ms,
        };
        // SAFETY: as required by the caller.
        match unsafe { file_added(main, &key_name, *max, &peer) } {
            Ok(()) => restored += 1,
            Err(_) => refused += 1,
        }
    }
    if refused > 0 {
        ngx::ngx_log_error!(
            nginx_sys::NGX_LOG_WARN,
            log,
            "lb_state: {} added peer(s) not restored (over max_added, or no room in zone \
             \"ngx_http_lb\")",
            refused
        );
    }
    restored
}

/// Brings back the admin states and weights of the state file (after the upstreams built
/// their peers). A change to a peer whose `server` line changed since is dropped (the
/// configuration wins).
///
/// # Safety
/// As for `read_state`.
pub unsafe fn restore_changes(main: &mut MainConf, file: &api::state::StateFile, added: usize) {
    let Some(path) = main.state_path.clone() else {
        return;
    };
    let log = main.log();
    let (mut restored, mut dropped, mut unmatched) = (0, 0, 0);
    for saved in &file.peers {
        let before = restored + dropped;
        for &u in &main.upstreams {
            // SAFETY: the tables of the committed configuration, their records claimed.
            let u = unsafe { &*u };
            // SAFETY: as above.
            if unsafe { bytes(&u.name) } != saved.upstream.as_bytes()
                || saved_kind(u.kind) != saved.kind
            {
                continue;
            }
            for p in &u.current().peers {
                // SAFETY: as above.
                if unsafe { bytes(p.name()) } != saved.address.as_bytes() {
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
        "lb_state: restored {} peer change(s) and {} added peer(s) from \"{}\"{}",
        restored,
        added,
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
    } else if m == nginx_sys::NGX_HTTP_POST {
        Method::Post
    } else if m == nginx_sys::NGX_HTTP_DELETE {
        Method::Delete
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
        if write && method.writes() {
            let host = (*r).headers_in.host;
            let host = (!host.is_null()).then(|| bytes(&(*host).value));
            let origin = crate::shell::status::header_in(r, b"origin");
            if let Some(e) = api::cross_site(origin, host) {
                let rc = ngx_http_discard_request_body(r);
                if rc != crate::shell::nginx::OK {
                    return rc;
                }
                return send_error(r, &e);
            }
        }
        if matches!(method, Method::Patch | Method::Post) && write {
            if (*r).headers_in.content_length_n > api::MAX_BODY as i64 {
                let e = ApiError::new(
                    413,
                    format!("the body is larger than {} bytes", api::MAX_BODY),
                );
                let rc = ngx_http_discard_request_body(r);
                if rc != crate::shell::nginx::OK {
                    return rc;
                }
                return send_error(r, &e);
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
            Ok(body) => respond(r, method_of((*r).method), true, &body),
            Err(e) => send_error(r, &e),
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
        let result = match api::parse(method, relative_path(r), write, body) {
            Ok(op) => {
                let main = *(*r).main_conf.add(ctx_index()) as *const MainConf;
                if main.is_null() {
                    Err(ApiError::new(404, "no upstreams"))
                } else {
                    carry_out(r, &*main, op)
                }
            }
            Err(e) => Err(e),
        };
        crate::shell::nginx::lb_debug!(
            (*(*r).connection).log,
            "lb: api: {} {} ({} byte body): {}",
            bytes(&(*r).method_name).escape_ascii(),
            bytes(&(*r).uri).escape_ascii(),
            body.len(),
            match &result {
                Ok(Answer::Body(status, _)) => format!("{status}"),
                Ok(Answer::Stream(_)) => "200, a list".to_string(),
                Err(e) => format!("{}: {}", e.status, String::from_utf8_lossy(&e.body())),
            }
        );
        match result {
            Ok(Answer::Body(status, json)) => send(r, status, JSON, json),
            Ok(Answer::Stream(producer)) => crate::shell::stream::send(r, 200, JSON, producer),
            Err(e) => send_error(r, &e),
        }
    }
}

/// Answers `e` as JSON (with `Allow` for a 405).
///
/// # Safety
/// A live request whose header is not sent yet.
unsafe fn send_error(r: *mut ngx_http_request_t, e: &ApiError) -> ngx_int_t {
    // SAFETY: as required by the caller; the header's strings are static.
    unsafe {
        if let Some(allow) = e.allow {
            let elt = nginx_sys::ngx_list_push(&mut (*r).headers_out.headers)
                as *mut nginx_sys::ngx_table_elt_t;
            if elt.is_null() {
                return crate::shell::nginx::ERROR;
            }
            // Zeroing first keeps this correct for nginx versions with and without `next`.
            ptr::write_bytes(elt, 0, 1);
            (*elt).hash = 1;
            (*elt).key = nginx_sys::ngx_str_t {
                len: 5,
                data: b"Allow".as_ptr() as *mut u8,
            };
            (*elt).value = nginx_sys::ngx_str_t {
                len: allow.len(),
                data: allow.as_ptr() as *mut u8,
            };
            (*elt).lowcase_key = b"allow".as_ptr() as *mut u8;
        }
        send(r, e.status as usize, JSON, e.body())
    }
}

/// Logs an operator's change once, at `notice`, with the client's address.
///
/// # Safety
/// A live request.
unsafe fn log_change(r: *mut ngx_http_request_t, what: core::fmt::Arguments) {
    // SAFETY: as required by the caller.
    unsafe {
        ngx::ngx_log_error!(
            NGX_LOG_NOTICE,
            (*(*r).connection).log,
            "lb: api: {} by {}",
            what,
            bytes(&(*(*r).connection).addr_text).escape_ascii()
        );
    }
}

/// What an operation answers.
enum Answer {
    /// A status and a JSON body.
    Body(usize, Vec<u8>),
    /// 200 and a JSON body made as it is sent (the lists, which grow with the peers).
    Stream(Box<dyn crate::shell::stream::Producer>),
}

/// The list `shape` of `upstreams`, streamed.
///
/// # Safety
/// The upstreams of this worker's cycle.
unsafe fn listing(upstreams: Vec<*const Upstream>, shape: json::Shape) -> Answer {
    // SAFETY: as required by the caller.
    let source = unsafe { Live::hold(upstreams) };
    Answer::Stream(Box::new(Rendering {
        render: Render::Json(json::Stream::new(shape)),
        source,
    }))
}

/// Carries an operation out: the status and JSON of the answer.
///
/// # Safety
/// A live request of the http block `main` belongs to.
unsafe fn carry_out(
    r: *mut ngx_http_request_t,
    main: &MainConf,
    op: Op,
) -> Result<Answer, ApiError> {
    // SAFETY: tables and records live as long as the cycle; this worker's event loop is the
    // only user of its tables.
    unsafe {
        let upstreams: &[*mut Upstream] = &main.upstreams;
        // This worker may have served no proxied request since the last change: bring its
        // view up to date first (weights set through the API, resolved and added peers).
        for &u in upstreams {
            if (*u).records_ready {
                (*u).follow_weights();
                crate::shell::resolve::refresh(&mut *u);
            }
        }
        // `?kind=stream` picks the stream upstream of a name an http one has too; without it
        // the http one comes first (as before stream upstreams existed), else the stream one.
        let kind = api::kind_arg(bytes(&(*r).args))?;
        let find = |name: &str| -> Result<*mut Upstream, ApiError> {
            let named = || {
                upstreams
                    .iter()
                    .copied()
                    .filter(|&u| bytes(&(*u).name) == name.as_bytes())
            };
            match kind {
                Some(k) => named().find(|&u| saved_kind((*u).kind) == k),
                None => named()
                    .find(|&u| (*u).kind == Kind::Http)
                    .or_else(|| named().next()),
            }
            .ok_or_else(|| ApiError::new(404, format!("unknown upstream \"{name}\"")))
        };
        let now = crate::shell::nginx::now_ms();
        let wall = crate::shell::status::wall_ms();
        let all = || upstreams.iter().map(|&u| u as *const Upstream).collect();
        match op {
            Op::ListUpstreams => Ok(listing(all(), json::Shape::Upstreams)),
            Op::GetUpstream(name) => Ok(listing(vec![find(&name)?], json::Shape::Upstream)),
            Op::ListPeers(name) => Ok(listing(vec![find(&name)?], json::Shape::Peers)),
            Op::GetPeer { upstream, address } => {
                peer_json(&*find(&upstream)?, &upstream, &address, now, wall).map(body)
            }
            Op::PatchPeer {
                upstream,
                address,
                patch,
            } => {
                let uptr = find(&upstream)?;
                patch_peer(r, main, &*uptr, &upstream, &address, &patch)?;
                save_state(main, (*(*r).connection).log);
                // This worker's own view first, so that the answer shows the new weight.
                (*uptr).follow_weights();
                peer_json(&*uptr, &upstream, &address, now, wall).map(body)
            }
            Op::AddPeer { upstream, peer } => {
                let uptr = find(&upstream)?;
                let max = match (*uptr).dynamic.as_ref() {
                    Some(d) if d.max_added > 0 && !main.table.is_null() => d.max_added,
                    _ => {
                        return Err(ApiError::new(
                            409,
                            format!(
                                "upstream \"{upstream}\" takes no added peers (it needs the \
                                 \"zone\" directive, and max_added above 0)"
                            ),
                        ))
                    }
                };
                let name = peer.name();
                if (*uptr)
                    .current()
                    .peers
                    .iter()
                    .any(|p| bytes(p.name()) == name.as_bytes() && !p.resolved)
                {
                    return Err(ApiError::new(
                        409,
                        format!("upstream \"{upstream}\" already has peer \"{name}\""),
                    ));
                }
                file_added(main, &(*uptr).key_name(), max, &peer).map_err(|e| match e {
                    added::AddError::Exists => ApiError::new(
                        409,
                        format!("upstream \"{upstream}\" already has peer \"{name}\""),
                    ),
                    added::AddError::UpstreamFull(_) => ApiError::new(
                        507,
                        format!(
                            "upstream \"{upstream}\" has {max} added peers, as many as its \
                             max_added allows"
                        ),
                    ),
                    added::AddError::ZoneFull => {
                        ApiError::new(507, "no room for more added peers in zone \"ngx_http_lb\"")
                    }
                })?;
                log_change(
                    r,
                    format_args!(
                        "peer {} added to {}upstream \"{}\" (weight {}{})",
                        name,
                        (*uptr).kind.prefix(),
                        upstream.escape_default(),
                        peer.weight,
                        if peer.backup { ", backup" } else { "" }
                    ),
                );
                save_state(main, (*(*r).connection).log);
                crate::shell::resolve::refresh(&mut *uptr);
                match peer_json(&*uptr, &upstream, &name, now, wall) {
                    Ok((_, json)) => Ok(Answer::Body(201, json)),
                    // Filed, but no record was free for it yet: it joins when one is (the
                    // workers try again every second), and the status shows it then.
                    Err(_) => Ok(Answer::Body(
                        201,
                        serde_json::to_vec(&serde_json::json!({
                            "address": name,
                            "source": "api",
                            "joined": false,
                        }))
                        .unwrap_or_default(),
                    )),
                }
            }
            Op::DeletePeer { upstream, address } => {
                let uptr = find(&upstream)?;
                let peers: Vec<&Peer> = (*uptr)
                    .current()
                    .peers
                    .iter()
                    .filter(|p| bytes(p.name()) == address.as_bytes())
                    .collect();
                if peers.is_empty() {
                    return Err(ApiError::new(
                        404,
                        format!("no peer \"{address}\" in upstream \"{upstream}\""),
                    ));
                }
                if !peers.iter().any(|p| p.added) || main.table.is_null() {
                    return Err(ApiError::new(
                        409,
                        format!(
                            "peer \"{address}\" comes from the configuration (or DNS), not from \
                             lb_api: edit the configuration, or set it down"
                        ),
                    ));
                }
                if !unfile_added(main, &(*uptr).key_name(), address.as_bytes()) {
                    return Err(ApiError::new(
                        404,
                        format!("no peer \"{address}\" in upstream \"{upstream}\""),
                    ));
                }
                // Added again later, it starts without what was set for it now.
                for p in peers.iter().filter(|p| p.added) {
                    (*p.shared).forget_operator();
                }
                log_change(
                    r,
                    format_args!(
                        "peer {} removed from {}upstream \"{}\"",
                        address.escape_default(),
                        (*uptr).kind.prefix(),
                        upstream.escape_default()
                    ),
                );
                save_state(main, (*(*r).connection).log);
                crate::shell::resolve::refresh(&mut *uptr);
                Ok(Answer::Body(204, Vec::new()))
            }
        }
    }
}

/// Applies a PATCH to every peer of `u` named `address`.
///
/// # Safety
/// A live request; `u` is one of `main`'s upstreams.
unsafe fn patch_peer(
    r: *mut ngx_http_request_t,
    main: &MainConf,
    u: &Upstream,
    upstream: &str,
    address: &str,
    patch: &api::PeerPatch,
) -> Result<(), ApiError> {
    // SAFETY: records are mapped for the life of the process; the header too.
    unsafe {
        let peers: Vec<&Peer> = u
            .current()
            .peers
            .iter()
            .filter(|p| bytes(p.name()) == address.as_bytes())
            .collect();
        if peers.iter().any(|p| p.record().is_none()) {
            return Err(ApiError::new(
                409,
                format!(
                    "peer \"{address}\" has no room in zone \"ngx_http_lb\" (its state is \
                     private to each worker until a reload finds room): it cannot be changed \
                     for all workers"
                ),
            ));
        }
        if peers.is_empty() {
            return Err(ApiError::new(
                404,
                format!("no peer \"{address}\" in upstream \"{upstream}\""),
            ));
        }
        if let Some(w) = patch.weight {
            for p in &peers {
                let before = (*p.shared).set_weight(w);
                let now = w.unwrap_or(p.conf_weight);
                if before.unwrap_or(p.conf_weight) != now {
                    log_change(
                        r,
                        format_args!(
                            "peer {} in {}upstream \"{}\" set to weight {}{}",
                            address.escape_default(),
                            u.kind.prefix(),
                            upstream.escape_default(),
                            now,
                            if w.is_none() { " (configured)" } else { "" }
                        ),
                    );
                }
            }
            // Every worker rebuilds its selection state at its next request.
            if !main.table.is_null() {
                (*main.table)
                    .weights
                    .fetch_add(1, core::sync::atomic::Ordering::Release);
            }
        }
        if let Some(admin) = patch.admin {
            let default_up = u.check.as_ref().is_none_or(|c| c.conf.default_up);
            for p in &peers {
                let before = (*p.shared).set_admin(admin.code());
                if before != api::Admin::Up.code() && admin == api::Admin::Up {
                    // Back from drain or down: `lb_slow_start` ramps it.
                    (*p.shared).start_ramp(crate::shell::nginx::now_ms());
                    u.ramp_started();
                }
                if before == api::Admin::Down.code() && admin != api::Admin::Down {
                    // Checks stopped while it was down: what they said then is old news;
                    // start over from default= and probe at once.
                    (*p.shared).recheck(default_up);
                }
                if before != admin.code() {
                    log_change(
                        r,
                        format_args!(
                            "peer {} in {}upstream \"{}\" set to {}",
                            address.escape_default(),
                            u.kind.prefix(),
                            upstream.escape_default(),
                            admin.name()
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

fn body((status, json): (usize, Vec<u8>)) -> Answer {
    Answer::Body(status, json)
}

/// The status object of peer `address` in `u` (the first with that address; only its record
/// is read).
fn peer_json(
    u: &Upstream,
    upstream: &str,
    address: &str,
    now: u64,
    wall: u64,
) -> Result<(usize, Vec<u8>), ApiError> {
    let peer = u
        .current()
        .peers
        .iter()
        .find(|p| crate::shell::status::address(p) == address)
        .ok_or_else(|| {
            ApiError::new(
                404,
                format!("no peer \"{address}\" in upstream \"{upstream}\""),
            )
        })?;
    let peer = snapshot_peer(u, peer, now, wall);
    Ok((200, serde_json::to_vec(&peer).unwrap_or_default()))
}
