//! The nginx side of `lb_status`: the directive (a content handler for its location) and the
//! handler that copies the shared state into a snapshot and sends it rendered.

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_buf_t, ngx_chain_t, ngx_command_t, ngx_conf_t, ngx_http_conf_ctx_t,
    ngx_http_core_loc_conf_t, ngx_http_core_module, ngx_http_discard_request_body,
    ngx_http_output_filter, ngx_http_request_t, ngx_http_send_header, ngx_int_t, ngx_list_part_t,
    ngx_pcalloc, ngx_pnalloc, ngx_str_t, ngx_table_elt_t, ngx_uint_t,
};

use crate::health::reason::Reason;
use crate::shell::conf::{ctx_index, MainConf};
use crate::shell::nginx::{bytes, CONF_OK};
use crate::shell::table::Upstream;
use crate::status::query::{self, Format};
use crate::status::snapshot::{
    CheckSummary, HealthChecks, PeerSnapshot, PeerState, Responses, Snapshot, UpstreamSnapshot,
};
use crate::status::{html, json, prometheus};

/// `lb_status;`: makes its location answer with the status.
///
/// # Safety
/// Called by nginx with the configuration being parsed (location context).
pub unsafe extern "C" fn set_lb_status(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: in a location, the context's loc_conf array holds the core module's conf.
    unsafe {
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

/// Copies one upstream's configuration and shared counters.
pub fn snapshot_upstream(u: &Upstream, now_ms: u64, wall: u64) -> UpstreamSnapshot {
    let checked = u.check.is_some();
    let peers = u
        .current()
        .peers
        .iter()
        .map(|p| {
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
            let health_checks = checked.then(|| {
                let reason = s.reason();
                let mut downtime = n.downtime_ms;
                if !health.up() && n.last_change_ms > 0 {
                    downtime += wall.saturating_sub(n.last_change_ms);
                }
                HealthChecks {
                    checks: n.checks,
                    fails: n.check_fails,
                    unhealthy: n.unhealthy,
                    last_passed: (n.checks > 0).then_some(reason == Reason::Passed),
                    last_reason: reason.to_string(),
                    last_change: (n.last_change_ms > 0).then_some(n.last_change_ms),
                    downtime,
                }
            });
            PeerSnapshot {
                // SAFETY: nginx strings of the configuration, or a resolved peer's copies that
                // the snapshot keeps alive (`OwnedAddr`).
                name: String::from_utf8_lossy(unsafe { bytes(&p.server) }).into_owned(),
                address: String::from_utf8_lossy(unsafe { bytes(&p.name) }).into_owned(),
                weight: p.weight,
                backup: p.backup,
                resolved: p.resolved,
                admin,
                source: match (p.resolved, p.added) {
                    (true, _) => "dns",
                    (_, true) => "api",
                    _ => "config",
                },
                state,
                active: u64::from(s.active()),
                max_conns: p.limits.max_conns,
                requests: n.requests,
                responses: Responses::from_array(n.responses),
                fails: n.fails,
                unavail: n.unavail,
                ejections: s.ejections(),
                slow_start: u.slow_start.and_then(|ss| {
                    crate::balance::slow_start::factor(s.ramp_start(), now_ms, ss.ms)
                }),
                health_checks,
                response_time_ms: s.response_time_us().map(|us| us as f64 / 1000.0),
                response_time_histogram: s.histogram().into(),
            }
        })
        .collect();
    UpstreamSnapshot {
        // SAFETY: nginx string of the configuration.
        name: String::from_utf8_lossy(unsafe { bytes(&u.name) }).into_owned(),
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
            u.current().peers[..u.current().primaries]
                .first()
                // SAFETY: every peer of a snapshot has its record.
                .is_some_and(|p| unsafe { &*p.shared }.panic())
        }),
        peers,
    }
}

/// The value of the request header `name` (lowercase), if present.
///
/// # Safety
/// `r` must be a live request.
unsafe fn header_in<'a>(r: *mut ngx_http_request_t, name: &[u8]) -> Option<&'a [u8]> {
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
        let now = crate::shell::nginx::now_ms();
        let wall = wall_ms();
        let mut upstreams = Vec::new();
        if !main.is_null() {
            for &u in &(*main).upstreams {
                // This worker's view may lag a change nobody sent it a request for yet (weights
                // and peers changed through lb_api, resolved addresses): catch up first.
                if (*u).records_ready {
                    (*u).follow_weights();
                    (*u).follow_ramps(crate::shell::nginx::now_ms());
                    crate::shell::resolve::refresh(&mut *u);
                }
                let u = &*u;
                if let Some(want) = &q.upstream {
                    if bytes(&u.name) != want.as_bytes() {
                        continue;
                    }
                }
                upstreams.push(snapshot_upstream(u, now, wall));
            }
        }
        if let Some(want) = &q.upstream {
            if upstreams.is_empty() {
                let msg = format!("unknown upstream \"{want}\"");
                return send(r, 404, "application/json", json::error(&msg));
            }
        }
        let snap = Snapshot {
            module_version: env!("CARGO_PKG_VERSION").to_string(),
            nginx_version: nginx_sys::NGINX_VERSION.to_string_lossy().into_owned(),
            time: wall,
            upstreams,
        };
        match q.format {
            Format::Json => send(r, 200, "application/json", json::render(&snap)),
            Format::Prometheus => send(
                r,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                prometheus::render(&snap),
            ),
            Format::Html => send(r, 200, "text/html; charset=utf-8", html::render(&snap, 5)),
        }
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
