//! The nginx side of `lb_status`: the directive (a content handler for its location) and the
//! handler that sends the shared state rendered, copying it out of the records a slice of
//! peers at a time as the answer is sent (`Live`, `shell::stream`).

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_buf_t, ngx_chain_t, ngx_command_t, ngx_conf_t, ngx_http_conf_ctx_t,
    ngx_http_core_loc_conf_t, ngx_http_core_module, ngx_http_discard_request_body,
    ngx_http_output_filter, ngx_http_request_t, ngx_http_send_header, ngx_int_t, ngx_list_part_t,
    ngx_pcalloc, ngx_pnalloc, ngx_str_t, ngx_table_elt_t, ngx_uint_t,
};

use core::fmt::Write;
use std::borrow::Cow;
use std::ops::Range;

use crate::health::reason::Reason;
use crate::shell::conf::{ctx_index, MainConf};
use crate::shell::nginx::{bytes, conf_error, directive_params, CONF_OK};
use crate::shell::stream::Rendering;
use crate::shell::table::{Members, Peer, Upstream};
use crate::status::query::{self, Format};
use crate::status::snapshot::{
    CheckSummary, HealthChecks, PeerSnapshot, PeerState, Responses, SnapshotHead, UpstreamHead,
};
use crate::status::stream::{Render, Source};
use crate::status::{html, json, prometheus};

/// `lb_status [api=PATH];` in one location (`create_loc_conf` makes one for every location;
/// only those with `lb_status` use it).
#[derive(Default)]
pub struct StatusLoc {
    /// The `lb_api` location the HTML page's buttons call (`status::directive`).
    api: Option<String>,
    /// The HTML page's Content-Security-Policy (hashes of its script and style sheet).
    csp: String,
}

/// The balancer module's per-location configuration: `lb_status`'s arguments.
///
/// # Safety
/// Called by nginx with a valid `cf` whose pool lives as long as the configuration.
pub unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // SAFETY: as required by the caller; the pool runs the value's destructor (freeing the
    // String) when the configuration is released.
    unsafe { ngx::core::Pool::from_ngx_pool((*cf).pool) }.allocate(StatusLoc::default())
        as *mut c_void
}

/// `lb_status [api=PATH];`: makes its location answer with the status.
///
/// # Safety
/// Called by nginx with the configuration being parsed (location context) and this module's
/// location configuration (`create_loc_conf`).
pub unsafe extern "C" fn set_lb_status(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: as required by the caller: directive arguments are nginx strings of the pool;
    // in a location, the context's loc_conf array holds the core module's conf.
    unsafe {
        let args = match crate::status::directive::parse(&directive_params(cf)) {
            Ok(a) => a,
            Err(e) => return conf_error(cf, &e),
        };
        let loc = &mut *(conf as *mut StatusLoc);
        loc.api = args.api;
        loc.csp = html::content_security_policy();
        let ctx = (*cf).ctx as *mut ngx_http_conf_ctx_t;
        let index = (*ptr::addr_of!(ngx_http_core_module)).ctx_index;
        let clcf = *(*ctx).loc_conf.add(index) as *mut ngx_http_core_loc_conf_t;
        (*clcf).handler = Some(handler);
    }
    CONF_OK
}

pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Copies one peer's configuration and shared counters.
pub fn snapshot_peer(u: &Upstream, p: &Peer, now_ms: u64, wall: u64) -> PeerSnapshot {
    let mut out = PeerSnapshot::default();
    fill_peer(u, p, now_ms, wall, &mut out);
    out
}

/// `snapshot_peer` into `out`, in the memory it has (its strings and vectors are reused: a
/// scrape copies every peer, Prometheus once per family).
pub fn fill_peer(u: &Upstream, p: &Peer, now_ms: u64, wall: u64, out: &mut PeerSnapshot) {
    let checked = u.check.is_some();
    // SAFETY: every peer of a snapshot has its record (configured peers before workers
    // start, resolved ones when they join); the zone stays mapped for the process.
    let s = unsafe { &*p.shared };
    let health = s.health();
    let n = s.counters();
    let admin = crate::api::Admin::from_code(s.admin());
    let state = PeerState::derive(
        p.down,
        checked,
        health.checking(),
        s.verdict(&p.limits, now_ms),
    );
    // A configured `down` wins over the operator's state.
    let state = if p.down {
        state
    } else {
        state.with_admin(admin)
    };
    // Every field is named: a field added to `PeerSnapshot` must be set here too, or a reused
    // copy would show another peer's value.
    let PeerSnapshot {
        name,
        address,
        weight,
        backup,
        resolved,
        admin: out_admin,
        source,
        state: out_state,
        active,
        max_conns,
        requests,
        responses,
        fails,
        unavail,
        ejections,
        slow_start,
        health_checks,
        response_time_ms,
        response_time_histogram,
    } = out;
    if checked {
        let reason = s.reason();
        let mut downtime = n.downtime_ms;
        if !health.up() && n.last_change_ms > 0 {
            downtime += wall.saturating_sub(n.last_change_ms);
        }
        let h = health_checks.get_or_insert_with(HealthChecks::default);
        let mut last_reason = core::mem::take(&mut h.last_reason);
        last_reason.clear();
        let _ = write!(last_reason, "{reason}");
        *h = HealthChecks {
            checks: n.checks,
            fails: n.check_fails,
            unhealthy: n.unhealthy,
            last_passed: (n.checks > 0).then_some(reason == Reason::Passed),
            last_reason,
            last_change: (n.last_change_ms > 0).then_some(n.last_change_ms),
            downtime,
        };
    } else {
        *health_checks = None;
    }
    // SAFETY: nginx strings of the configuration, or a resolved peer's copies that the
    // snapshot keeps alive (`OwnedAddr`).
    set_lossy(name, unsafe { bytes(p.server()) });
    // SAFETY: as above.
    set_lossy(address, unsafe { bytes(p.name()) });
    *weight = p.weight;
    *backup = p.backup;
    *resolved = p.resolved;
    *out_admin = admin;
    *source = match (p.resolved, p.added) {
        (true, _) => "dns",
        (_, true) => "api",
        _ => "config",
    };
    *out_state = state;
    *active = u64::from(s.active());
    *max_conns = p.limits.max_conns;
    *requests = n.requests;
    *responses = Responses::from_array(n.responses);
    *fails = n.fails;
    *unavail = n.unavail;
    *ejections = s.ejections();
    *slow_start = u
        .slow_start
        .and_then(|ss| crate::balance::slow_start::factor(s.ramp_start(), now_ms, ss.ms));
    *response_time_ms = s.response_time_us().map(|us| us as f64 / 1000.0);
    response_time_histogram.set(s.histogram());
}

/// `String::from_utf8_lossy(b)` into `out`, in the memory it has.
fn set_lossy(out: &mut String, b: &[u8]) {
    out.clear();
    match core::str::from_utf8(b) {
        Ok(text) => out.push_str(text),
        Err(_) => out.push_str(&String::from_utf8_lossy(b)),
    }
}

/// A peer's address as the status shows it.
pub fn address(p: &Peer) -> Cow<'_, str> {
    // SAFETY: nginx strings of the configuration, or a resolved peer's copies that the
    // snapshot keeps alive (`OwnedAddr`).
    String::from_utf8_lossy(unsafe { bytes(p.name()) })
}

/// One upstream's configuration and state, without its peers (`m`: its peer set).
pub fn upstream_head(u: &Upstream, m: &Members) -> UpstreamHead {
    UpstreamHead {
        // SAFETY: nginx string of the configuration.
        name: String::from_utf8_lossy(unsafe { bytes(&u.name) }).into_owned(),
        kind: u.kind.name().to_string(),
        method: u.method.name().to_string(),
        checks: u.check.as_ref().map(|c| CheckSummary {
            kind: c.conf.kind.name().to_string(),
            interval_ms: c.conf.interval_ms,
            timeout_ms: c.conf.timeout_ms,
            rise: c.conf.rise,
            fall: c.conf.fall,
            uri: c.conf.kind.is_http().then(|| c.conf.uri.clone()),
            keepalive: c.conf.kind.is_http().then_some(c.conf.keepalive),
        }),
        panic: u.panic.as_ref().map(|_| {
            m.peers[..m.primaries]
                .first()
                // SAFETY: every peer of a snapshot has its record.
                .is_some_and(|p| unsafe { &*p.shared }.panic())
        }),
    }
}

/// Upstreams as a streamed rendering reads them (`status::stream::Source`): each upstream's
/// peer set is held from the start of the answer to its end (peers that join meanwhile are
/// not in it; those that leave still are, with their records' values), and a slice of peers
/// is copied out of the shared records only when it is rendered.
pub struct Live {
    /// Each upstream and its peer set, held (`Members::retain`) for upstreams whose set can
    /// be replaced (`dynamic`); the others keep theirs for the cycle.
    held: Vec<(*const Upstream, *mut Members)>,
}

impl Live {
    /// Holds the current peer sets of `upstreams`.
    ///
    /// # Safety
    /// The upstreams of this worker's cycle, which outlive the result.
    pub unsafe fn hold(upstreams: impl IntoIterator<Item = *const Upstream>) -> Live {
        let held = upstreams
            .into_iter()
            .map(|u| {
                // SAFETY: as required by the caller; a snapshot the upstream holds.
                unsafe {
                    let m = (*u).members;
                    if (*u).dynamic.is_some() {
                        Members::retain(m);
                    }
                    (u, m)
                }
            })
            .collect();
        Live { held }
    }

    fn get(&self, u: usize) -> (&Upstream, &Members) {
        let (u, m) = self.held[u];
        // SAFETY: `hold`'s caller keeps the upstreams alive; the peer sets are held, or the
        // upstream's own for the cycle (changed in place only in their weights, between
        // events, never while this reference is used).
        unsafe { (&*u, &*m) }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        for &(u, m) in &self.held {
            // SAFETY: the references `hold` took.
            unsafe {
                if (*u).dynamic.is_some() {
                    Members::release(m);
                }
            }
        }
    }
}

impl Source for Live {
    fn upstreams(&self) -> usize {
        self.held.len()
    }
    fn head(&self, u: usize) -> UpstreamHead {
        let (u, m) = self.get(u);
        upstream_head(u, m)
    }
    fn peer_count(&self, u: usize) -> usize {
        self.get(u).1.peers.len()
    }
    fn address(&self, u: usize, i: usize) -> Cow<'_, str> {
        address(&self.get(u).1.peers[i])
    }
    fn peers(&self, u: usize, range: Range<usize>, out: &mut Vec<PeerSnapshot>) {
        let (u, m) = self.get(u);
        let (now, wall) = (crate::shell::nginx::now_ms(), wall_ms());
        let peers = &m.peers[range];
        prefetch(peers);
        out.truncate(peers.len());
        for (i, p) in peers.iter().enumerate() {
            match out.get_mut(i) {
                Some(slot) => fill_peer(u, p, now, wall, slot),
                None => out.push(snapshot_peer(u, p, now, wall)),
            }
        }
    }
}

/// Asks the CPU for the records of `peers` before they are read: their cache misses then
/// overlap instead of stalling the copy one after the other (a scrape of 100,000 peers reads
/// far more records than the caches hold; without this, the first load of each record was
/// most of the time a Prometheus scrape took).
fn prefetch(peers: &[Peer]) {
    #[cfg(target_arch = "x86_64")]
    for p in peers {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let base = p.shared as *const i8;
        for offset in (0..core::mem::size_of::<crate::shm::PeerShared>()).step_by(64) {
            // SAFETY: a prefetch is a hint that never faults and changes nothing a program
            // can see; the address is within the peer's record.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = peers;
}

/// The value of the request header `name` (lowercase), if present.
///
/// # Safety
/// `r` must be a live request.
pub(crate) unsafe fn header_in<'a>(r: *mut ngx_http_request_t, name: &[u8]) -> Option<&'a [u8]> {
    // SAFETY: walking nginx's list of request headers, as nginx builds it.
    unsafe {
        let mut part: *mut ngx_list_part_t = &mut (*r).headers_in.headers.part;
        while !part.is_null() {
            let elts = (*part).elts as *const ngx_table_elt_t;
            for i in 0..(*part).nelts {
                let h = &*elts.add(i);
                if bytes(&h.key).eq_ignore_ascii_case(name) {
                    return Some(bytes(&h.value));
                }
            }
            part = (*part).next;
        }
    }
    None
}

unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request; our main conf was created for
    // the http block this request belongs to.
    unsafe {
        let method = (*r).method;
        if method & (nginx_sys::NGX_HTTP_GET | nginx_sys::NGX_HTTP_HEAD) as ngx_uint_t == 0 {
            return nginx_sys::NGX_HTTP_NOT_ALLOWED as ngx_int_t;
        }
        let rc = ngx_http_discard_request_body(r);
        if rc != crate::shell::nginx::OK {
            return rc;
        }
        let q = match query::parse(bytes(&(*r).args), header_in(r, b"accept")) {
            Ok(q) => q,
            Err(e) => return send(r, 400, "application/json", json::error(&e)),
        };
        let main = *(*r).main_conf.add(ctx_index()) as *const MainConf;
        let wall = wall_ms();
        let mut upstreams: Vec<*const Upstream> = Vec::new();
        if !main.is_null() {
            for &u in &(*main).upstreams {
                // This worker's view may lag a change nobody sent it a request for yet (weights
                // and peers changed through lb_api, resolved addresses): catch up first.
                if (*u).records_ready {
                    (*u).follow_weights();
                    (*u).follow_ramps(crate::shell::nginx::now_ms());
                    crate::shell::resolve::refresh(&mut *u);
                }
                if let Some(want) = &q.upstream {
                    if bytes(&(*u).name) != want.as_bytes() {
                        continue;
                    }
                }
                upstreams.push(u);
            }
        }
        if let Some(want) = &q.upstream {
            if upstreams.is_empty() {
                let msg = format!("unknown upstream \"{want}\"");
                return send(r, 404, "application/json", json::error(&msg));
            }
        }
        let head = SnapshotHead {
            module_version: env!("CARGO_PKG_VERSION").to_string(),
            nginx_version: nginx_sys::NGINX_VERSION.to_string_lossy().into_owned(),
            time: wall,
        };
        let (ctype, render) = match q.format {
            Format::Json => (
                "application/json",
                Render::Json(json::Stream::new(json::Shape::Status(head))),
            ),
            Format::Prometheus => (
                "text/plain; version=0.0.4; charset=utf-8",
                Render::Prometheus(prometheus::Stream::new()),
            ),
            Format::Html => {
                // This handler runs only in locations with `lb_status`, which set their conf.
                let loc = &*(*(*r).loc_conf.add(ctx_index()) as *const StatusLoc);
                let api = loc.api.clone();
                if add_header(r, "Content-Security-Policy", &loc.csp) != crate::shell::nginx::OK {
                    return crate::shell::nginx::ERROR;
                }
                (
                    "text/html; charset=utf-8",
                    Render::Html(html::Stream::new(head, 5, api)),
                )
            }
        };
        let source = Live::hold(upstreams);
        crate::shell::stream::send(r, 200, ctype, Box::new(Rendering { render, source }))
    }
}

/// Adds a response header (`name` in any case; nginx sends it as given).
///
/// # Safety
/// `r` must be a live request whose header is not sent yet; `value` must outlive it (the
/// configuration's memory does).
unsafe fn add_header(r: *mut ngx_http_request_t, name: &'static str, value: &str) -> ngx_int_t {
    // SAFETY: as required by the caller; the element belongs to the request's header list,
    // nginx only reads its strings, the lowercase copy is in the pool.
    unsafe {
        let elt = nginx_sys::ngx_list_push(&mut (*r).headers_out.headers) as *mut ngx_table_elt_t;
        let low = ngx_pnalloc((*r).pool, name.len()) as *mut u8;
        if elt.is_null() || low.is_null() {
            return crate::shell::nginx::ERROR;
        }
        for (i, b) in name.bytes().enumerate() {
            *low.add(i) = b.to_ascii_lowercase();
        }
        // Zeroing first keeps this correct for nginx versions with and without `next`.
        ptr::write_bytes(elt, 0, 1);
        (*elt).hash = 1;
        (*elt).key = ngx_str_t {
            len: name.len(),
            data: name.as_ptr() as *mut u8,
        };
        (*elt).value = ngx_str_t {
            len: value.len(),
            data: value.as_ptr() as *mut u8,
        };
        (*elt).lowcase_key = low;
        crate::shell::nginx::OK
    }
}

/// Sends a complete response from memory.
///
/// # Safety
/// `r` must be a live main request whose body was discarded.
pub(crate) unsafe fn send(
    r: *mut ngx_http_request_t,
    status: usize,
    ctype: &'static str,
    body: Vec<u8>,
) -> ngx_int_t {
    // SAFETY: buffers come from the request pool and live until the request is finalised.
    unsafe {
        (*r).headers_out.status = status;
        (*r).headers_out.content_type = ngx_str_t {
            len: ctype.len(),
            data: ctype.as_ptr() as *mut u8,
        };
        (*r).headers_out.content_type_len = ctype.len();
        (*r).headers_out.content_length_n = body.len() as _;
        let rc = ngx_http_send_header(r);
        if rc == crate::shell::nginx::ERROR
            || rc > crate::shell::nginx::OK
            || (*r).header_only() != 0
        {
            return rc;
        }
        let data = ngx_pnalloc((*r).pool, body.len().max(1)) as *mut u8;
        let b = ngx_pcalloc((*r).pool, core::mem::size_of::<ngx_buf_t>()) as *mut ngx_buf_t;
        if data.is_null() || b.is_null() {
            return crate::shell::nginx::ERROR;
        }
        ptr::copy_nonoverlapping(body.as_ptr(), data, body.len());
        (*b).pos = data;
        (*b).last = data.add(body.len());
        (*b).set_memory(1);
        (*b).set_last_buf(u32::from(r == (*r).main));
        (*b).set_last_in_chain(1);
        let mut out = ngx_chain_t {
            buf: b,
            next: ptr::null_mut(),
        };
        ngx_http_output_filter(r, &mut out)
    }
}
