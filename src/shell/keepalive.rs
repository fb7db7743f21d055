//! The nginx side of `lb_keepalive`: per-peer lists of idle upstream connections in each
//! worker. `take` hands a cached connection to a request (called by `get_peer` once the
//! balancer has chosen the peer); `keep` caches a connection when an attempt ends cleanly
//! (called by `free_peer`); an idle connection that the backend closes, or that times out, is
//! closed and forgotten by `close_handler`.

use core::ffi::c_void;
use core::ptr;

use nginx_sys::{
    ngx_close_connection, ngx_connection_t, ngx_destroy_pool, ngx_event_t, ngx_handle_read_event,
    ngx_http_upstream_t, ngx_peer_connection_t,
};

use crate::keepalive::{IdleList, KeepaliveConf};

use crate::shell::nginx::OK;

type List = IdleList<*mut ngx_connection_t>;

/// One upstream's caches in this worker (built before the fork; each worker owns its copy).
pub struct PeerCaches {
    pub conf: KeepaliveConf,
    /// By slot. Boxed: an idle connection's `data` points at its list, which must not move
    /// when the vector grows. A list is made when the peer's first connection is kept, and the
    /// vector grown to its slot then: an upstream costs nothing per peer until connections are
    /// kept, then a pointer per slot up to the highest one kept.
    lists: Vec<Option<Box<List>>>,
}

impl PeerCaches {
    pub fn new(conf: KeepaliveConf) -> PeerCaches {
        PeerCaches {
            conf,
            lists: Vec::new(),
        }
    }

    /// Closes the idle connections of slot `slot` (its peer left).
    ///
    /// # Safety
    /// In a worker, on its event loop.
    pub unsafe fn clear(&mut self, slot: usize) {
        if let Some(Some(list)) = self.lists.get_mut(slot) {
            while let Some(c) = list.take() {
                // SAFETY: a cached connection is open, owned by this worker, now in no list.
                unsafe { close(c) };
            }
        }
    }
}

/// Gives the request an idle connection to peer `i`, if there is one (O(1)).
///
/// # Safety
/// `pc` must be the request's peer connection, inside `get_peer`.
pub unsafe fn take(caches: &mut PeerCaches, i: usize, pc: *mut ngx_peer_connection_t) -> bool {
    let Some(c) = caches
        .lists
        .get_mut(i)
        .and_then(|l| l.as_mut())
        .and_then(|l| l.take())
    else {
        return false;
    };
    // SAFETY: cached connections are open and owned by this worker; the request's log lives
    // as long as the request.
    unsafe {
        (*c).set_idle(0);
        (*c).sent = 0;
        (*c).data = ptr::null_mut();
        (*c).log = (*pc).log;
        (*(*c).read).log = (*pc).log;
        (*(*c).write).log = (*pc).log;
        (*(*c).pool).log = (*pc).log;
        if (*(*c).read).timer_set() != 0 {
            nginx_sys::ngx_del_timer((*c).read);
        }
        (*pc).connection = c;
        (*pc).set_cached(1);
    }
    true
}

/// Caches the connection of an attempt to peer `i` that ended, if nginx's rules allow reuse:
/// no failure or error, a complete HTTP/1.1 exchange the backend did not ask to close, under
/// the request and lifetime limits, and the worker is not exiting. Returns whether it was kept.
///
/// # Safety
/// `pc` and `u` must be the request's peer connection and upstream, inside `free_peer`.
pub unsafe fn keep(
    caches: &mut PeerCaches,
    i: usize,
    pc: *mut ngx_peer_connection_t,
    u: *mut ngx_http_upstream_t,
    failed: bool,
) -> bool {
    // SAFETY: as required by the caller; the connection is ours until it is closed or handed on.
    unsafe {
        let c = (*pc).connection;
        // A connection without a pool never carried a request (nginx failed to set it up).
        if failed || c.is_null() || (*c).pool.is_null() {
            return false;
        }
        let (rev, wev) = ((*c).read, (*c).write);
        if (*rev).eof() != 0
            || (*rev).error() != 0
            || (*rev).timedout() != 0
            || (*wev).error() != 0
            || (*wev).timedout() != 0
        {
            return false;
        }
        let now = crate::shell::nginx::now_ms();
        if (*c).requests as u64 >= caches.conf.requests
            || now.saturating_sub((*c).start_time as u64) > caches.conf.time_ms
            || (*u).keepalive() == 0
            || (*u).request_body_sent() == 0
            || ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_terminate)) != 0
            || ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_exiting)) != 0
        {
            return false;
        }
        if ngx_handle_read_event(rev, 0) != OK {
            return false;
        }
        let per_peer = caches.conf.per_peer;
        if caches.lists.len() <= i {
            caches.lists.resize_with(i + 1, || None);
        }
        let list: *mut List =
            &mut **caches.lists[i].get_or_insert_with(|| Box::new(IdleList::new(per_peer)));
        if let Some(old) = (*list).put(c) {
            close(old);
        }
        (*pc).connection = ptr::null_mut();
        (*rev).set_delayed(0);
        nginx_sys::ngx_add_timer(rev, caches.conf.timeout_ms as _);
        if (*wev).timer_set() != 0 {
            nginx_sys::ngx_del_timer(wev);
        }
        (*wev).handler = Some(dummy_handler);
        (*rev).handler = Some(close_handler);
        (*c).data = list as *mut c_void;
        (*c).set_idle(1);
        let log = (*nginx_sys::ngx_cycle).log;
        (*c).log = log;
        (*rev).log = log;
        (*wev).log = log;
        (*(*c).pool).log = log;
        if (*rev).ready() != 0 {
            close_handler(rev);
            return false;
        }
    }
    true
}

unsafe extern "C" fn dummy_handler(_ev: *mut ngx_event_t) {}

/// An idle connection became readable (the backend closed it or sent something), timed out,
/// or the worker is closing idle connections: close and forget it.
unsafe extern "C" fn close_handler(ev: *mut ngx_event_t) {
    // SAFETY: the event belongs to an idle cached connection whose `data` is its list.
    unsafe {
        let c = (*ev).data as *mut ngx_connection_t;
        if (*c).close() == 0
            && (*(*c).read).timedout() == 0
            && crate::shell::nginx::peek(c) == crate::shell::nginx::Peek::Nothing
        {
            (*ev).set_ready(0);
            if ngx_handle_read_event((*c).read, 0) == OK {
                return;
            }
        }
        let list = (*c).data as *mut List;
        if !list.is_null() {
            (*list).remove(c);
        }
        close(c);
    }
}

/// Closes an upstream connection that is no longer cached (with its pool, as nginx does).
///
/// # Safety
/// `c` must be an open upstream connection owned by this worker and in no list.
unsafe fn close(c: *mut ngx_connection_t) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if !(*c).ssl.is_null() {
            (*(*c).ssl).set_no_wait_shutdown(1);
            (*(*c).ssl).set_no_send_shutdown(1);
            if nginx_sys::ngx_ssl_shutdown(c) == crate::shell::nginx::AGAIN {
                (*(*c).ssl).handler = Some(close_after_shutdown);
                return;
            }
        }
        ngx_destroy_pool((*c).pool);
        ngx_close_connection(c);
    }
}

unsafe extern "C" fn close_after_shutdown(c: *mut ngx_connection_t) {
    // SAFETY: nginx calls this once the TLS shutdown of our connection finished.
    unsafe {
        ngx_destroy_pool((*c).pool);
        ngx_close_connection(c);
    }
}
