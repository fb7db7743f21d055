//! Responses sent a chunk at a time (`lb_status`, `lb_api`'s lists): a `Producer` writes the
//! next piece (a bounded slice of the rendering, `status::stream`) only once nginx has sent
//! the previous one, so that a large answer neither blocks the worker for long nor piles up
//! in memory when the client reads slowly.
//!
//! How a response goes:
//! - the first piece is made in the content handler. If it is the whole answer, it is sent as
//!   before, with `Content-Length` (`status::send`). Otherwise the header goes without
//!   `Content-Length` (chunked for HTTP/1.1), the request is held (`r->main->count++`, the
//!   handler returns `NGX_DONE`) and its write handler takes over;
//! - each piece is passed to nginx's output filters in one buffer that points into our own
//!   memory (flushed, so that no filter keeps it). When nginx has sent it all, the write event
//!   is posted to `ngx_posted_next_events`, so the next piece is made on the next turn of the
//!   event loop, after whatever else is ready; when the client cannot take it all, the write
//!   handler waits for the socket (with `send_timeout`, as nginx's own writer does);
//! - the last piece carries `last_buf`, and `ngx_http_finalize_request` ends the request
//!   (nginx's writer sends whatever the socket did not take yet);
//! - the producer and its memory are freed by a cleanup of the request's pool, however the
//!   request ends (finished, client gone, timed out, worker exiting).
//!
//! Subrequests (`lb_status` in an SSI include) get the whole answer at once, as before.

use core::ffi::c_void;
use core::ptr;

use nginx_sys::{
    ngx_buf_t, ngx_chain_t, ngx_http_core_loc_conf_t, ngx_http_core_module,
    ngx_http_finalize_request, ngx_http_output_filter, ngx_http_request_t, ngx_http_send_header,
    ngx_int_t, ngx_pcalloc, ngx_str_t,
};

use crate::shell::nginx::{AGAIN, DONE, ERROR, OK};
use crate::status::stream::{Budget, Render, Source};

/// What one piece may hold: about 64 KB of output, or 256 peers read (a piece takes well under
/// a millisecond to make).
pub const PIECE: Budget = Budget {
    bytes: 64 * 1024,
    peers: 256,
};

/// Makes an answer a piece at a time.
pub trait Producer {
    /// Appends the next piece to `out`; true once the answer is complete.
    fn fill(&mut self, out: &mut Vec<u8>, b: Budget) -> bool;
}

/// A rendering and the source it reads.
pub struct Rendering<S: Source> {
    pub render: Render,
    pub source: S,
}

impl<S: Source> Producer for Rendering<S> {
    fn fill(&mut self, out: &mut Vec<u8>, b: Budget) -> bool {
        self.render.fill(&self.source, out, b)
    }
}

/// A streamed response in progress, owned by a cleanup of the request's pool.
struct Ctx {
    producer: Box<dyn Producer>,
    /// The piece nginx is sending: `b` points into it, so it is only written again once nginx
    /// has sent all of it.
    piece: Vec<u8>,
    b: *mut ngx_buf_t,
    /// `piece` is the last one.
    last: bool,
    /// nginx still holds some of `piece`: it must be sent before the next piece is made.
    waiting: bool,
}

/// Sends the answer `producer` makes, with `status` and `ctype`.
///
/// # Safety
/// `r` must be a live request whose body was discarded (or read), in its content handler or
/// an event handler of its own; the return value is for `ngx_http_finalize_request` (the
/// content handler returns it).
pub unsafe fn send(
    r: *mut ngx_http_request_t,
    status: usize,
    ctype: &'static str,
    mut producer: Box<dyn Producer>,
) -> ngx_int_t {
    // SAFETY: as required by the caller; every buffer and the context live until the request's
    // pool is destroyed (the context through the pool cleanup registered below).
    unsafe {
        let mut piece = Vec::new();
        let mut last = producer.fill(&mut piece, PIECE);
        if r != (*r).main {
            // An SSI include: its output is placed among the main request's (postponed), so
            // it is made at once.
            while !last {
                last = producer.fill(&mut piece, Budget::ALL);
            }
        }
        if last {
            return crate::shell::status::send(r, status, ctype, piece);
        }
        (*r).headers_out.status = status;
        (*r).headers_out.content_type = ngx_str_t {
            len: ctype.len(),
            data: ctype.as_ptr() as *mut u8,
        };
        (*r).headers_out.content_type_len = ctype.len();
        // No Content-Length: HTTP/1.1 clients get it chunked; 1.0 ones until the connection
        // closes.
        (*r).headers_out.content_length_n = -1;
        let rc = ngx_http_send_header(r);
        if rc == ERROR || rc > OK || (*r).header_only() != 0 {
            return rc;
        }
        let b = ngx_pcalloc((*r).pool, core::mem::size_of::<ngx_buf_t>()) as *mut ngx_buf_t;
        let cln = nginx_sys::ngx_pool_cleanup_add((*r).pool, 0);
        if b.is_null() || cln.is_null() {
            return ERROR;
        }
        let ctx = Box::into_raw(Box::new(Ctx {
            producer,
            piece,
            b,
            last: false,
            waiting: false,
        }));
        (*cln).handler = Some(drop_ctx);
        (*cln).data = ctx as *mut c_void;
        // Held until the last piece is handed over (`ngx_http_finalize_request` then).
        let main = (*r).main;
        (*main).set_count((*main).count() + 1);
        (*r).write_event_handler = Some(on_write);
        push(r, ctx);
        DONE
    }
}

/// Frees a response's context with its request's pool.
unsafe extern "C" fn drop_ctx(data: *mut c_void) {
    // SAFETY: `data` is the context `send` boxed for this pool; the pool runs its cleanups once.
    drop(unsafe { Box::from_raw(data as *mut Ctx) });
}

/// The context of `r`'s streamed response: the data of our cleanup in its pool.
///
/// The context is handled through a pointer, never a reference held across a call into
/// nginx: finalising the request can free it (with the pool) before that call returns.
///
/// # Safety
/// `r` must be a live request.
unsafe fn ctx_of(r: *mut ngx_http_request_t) -> Option<*mut Ctx> {
    // SAFETY: walking the pool's list of cleanups, as nginx builds it; ours holds a `Ctx`.
    unsafe {
        let mut c = (*(*r).pool).cleanup;
        while !c.is_null() {
            let ours = drop_ctx as unsafe extern "C" fn(*mut c_void);
            if (*c).handler.is_some_and(|h| core::ptr::fn_addr_eq(h, ours)) {
                return Some((*c).data as *mut Ctx);
            }
            c = (*c).next;
        }
    }
    None
}

/// Hands `ctx.piece` to nginx, then arranges for what comes next.
///
/// # Safety
/// `r` is the live request `ctx` belongs to, held by `send`; `ctx` may be freed on return.
unsafe fn push(r: *mut ngx_http_request_t, ctx: *mut Ctx) {
    // SAFETY: `ctx.b` is the request's buffer; `ctx.piece` stays untouched until nginx has
    // sent all of it (`waiting`), and lives as long as the request's pool.
    unsafe {
        let b = (*ctx).b;
        let piece = &mut (*ctx).piece;
        ptr::write_bytes(b, 0, 1);
        let start = piece.as_mut_ptr();
        (*b).start = start;
        (*b).pos = start;
        (*b).last = start.add(piece.len());
        (*b).end = (*b).last;
        // An empty last piece is a buffer with only `last_buf` (nginx refuses an empty buffer
        // that claims memory).
        (*b).set_memory(u32::from(!piece.is_empty()));
        (*b).set_flush(1);
        (*b).set_last_buf(u32::from((*ctx).last));
        (*b).set_last_in_chain(1);
        let mut out = ngx_chain_t {
            buf: b,
            next: ptr::null_mut(),
        };
        let rc = ngx_http_output_filter(r, &mut out);
        after(r, ctx, rc);
    }
}

/// What follows nginx's output filters' answer `rc` for the current piece.
///
/// # Safety
/// As for `push`.
unsafe fn after(r: *mut ngx_http_request_t, ctx: *mut Ctx, rc: ngx_int_t) {
    // SAFETY: as required by the caller; `ctx` is not used once the request is finalised.
    unsafe {
        if rc == ERROR {
            ngx_http_finalize_request(r, ERROR);
            return;
        }
        if (*ctx).last {
            // nginx's writer sends whatever the socket did not take yet, then ends it.
            (*r).write_event_handler = Some(nginx_sys::ngx_http_request_empty_handler);
            ngx_http_finalize_request(r, rc);
            return;
        }
        let wev = (*(*r).connection).write;
        if rc == AGAIN || (*(*ctx).b).pos != (*(*ctx).b).last {
            (*ctx).waiting = true;
            wait(r);
            return;
        }
        (*ctx).waiting = false;
        if (*wev).timer_set() != 0 && (*wev).delayed() == 0 {
            nginx_sys::ngx_del_timer(wev);
        }
        // Everything went out: the next piece on the next turn of the event loop, after the
        // events that are ready now (a posted event of this turn would run in this turn).
        nginx_sys::ngx_post_event(wev, ptr::addr_of_mut!(nginx_sys::ngx_posted_next_events));
    }
}

/// Waits until the client can take more (or `send_timeout`), as nginx's own writer does.
///
/// # Safety
/// As for `push`.
unsafe fn wait(r: *mut ngx_http_request_t) {
    // SAFETY: as required by the caller; the core module's location conf of the main request.
    unsafe {
        let wev = (*(*r).connection).write;
        let index = (*ptr::addr_of!(ngx_http_core_module)).ctx_index;
        let clcf = *(*(*r).main).loc_conf.add(index) as *const ngx_http_core_loc_conf_t;
        if (*wev).delayed() == 0 {
            nginx_sys::ngx_add_timer(wev, (*clcf).send_timeout);
        }
        if nginx_sys::ngx_handle_write_event(wev, (*clcf).send_lowat) != OK {
            ngx_http_finalize_request(r, ERROR);
        }
    }
}

/// The request's write handler while its answer is streamed: the socket can take more, or the
/// event this module posted came round.
unsafe extern "C" fn on_write(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls a request's write handler with the live request; the context is the
    // one `send` registered (the handler is only ours while it lives).
    unsafe {
        let c = (*r).connection;
        let wev = (*c).write;
        let Some(ctx) = ctx_of(r) else {
            ngx_http_finalize_request(r, ERROR);
            return;
        };
        if (*wev).timedout() != 0 {
            ngx::ngx_log_error!(
                nginx_sys::NGX_LOG_INFO,
                (*c).log,
                "lb: client timed out while a status answer was sent"
            );
            (*c).set_timedout(1);
            ngx_http_finalize_request(r, nginx_sys::NGX_HTTP_REQUEST_TIME_OUT as ngx_int_t);
            return;
        }
        if (*wev).delayed() != 0 {
            // limit_rate: its timer wakes us.
            wait(r);
            return;
        }
        if (*ctx).waiting {
            let rc = ngx_http_output_filter(r, ptr::null_mut());
            if rc == ERROR {
                ngx_http_finalize_request(r, ERROR);
                return;
            }
            if rc == AGAIN || (*(*ctx).b).pos != (*(*ctx).b).last {
                wait(r);
                return;
            }
            (*ctx).waiting = false;
        }
        let Ctx {
            producer,
            piece,
            last,
            ..
        } = &mut *ctx;
        piece.clear();
        *last = producer.fill(piece, PIECE);
        if piece.is_empty() && !*last {
            // A piece of work without output (Prometheus's pass over the addresses).
            nginx_sys::ngx_post_event(wev, ptr::addr_of_mut!(nginx_sys::ngx_posted_next_events));
            return;
        }
        push(r, ctx);
    }
}
