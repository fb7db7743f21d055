//! Connections kept idle for a peer's next probe (keepalive), at most a quarter of
//! `worker_connections` per worker.

use super::*;

/// Connections this worker keeps idle for probes (a worker is one thread: the atomic is only
/// for safe shared access).
pub(super) static KEPT: AtomicUsize = AtomicUsize::new(0);

/// How many idle probe connections a worker may keep: a quarter of `worker_connections`.
pub(super) fn keep_limit() -> usize {
    // SAFETY: the worker's cycle is live; `connection_n` is set from worker_connections.
    unsafe {
        nginx_sys::ngx_cycle
            .as_ref()
            .map_or(0, |c| c.connection_n / 4)
    }
}

/// Keeps the attempt's connection, idle, for the next probe of this peer (or closes it when
/// it cannot be kept).
pub(super) fn park(p: &mut Probe) {
    let c = p.conn;
    if KEPT.load(Relaxed) >= keep_limit() {
        return close_attempt(p);
    }
    // SAFETY: `c` is our live connection; from here its events go to `on_idle`, and nginx
    // closes it through them when the worker exits (it is marked idle).
    unsafe {
        for ev in [(*c).read, (*c).write] {
            if (*ev).timer_set() != 0 {
                nginx_sys::ngx_del_timer(ev);
            }
            (*ev).handler = Some(on_idle);
        }
        (*c).set_idle(1);
        // Whatever arrives from now on is a new event; anything already there (or a close
        // already seen) is found by `quiet` before the connection is reused.
        (*(*c).read).set_ready(0);
        if ngx_handle_read_event((*c).read, 0) != OK {
            return close_attempt(p);
        }
    }
    KEPT.fetch_add(1, Relaxed);
    p.parked = true;
    p.stage = Stage::Idle;
    p.sent = 0;
    reset_buf(p);
}

/// The kept connection goes back to work (or is about to be closed).
pub(super) fn unpark(p: &mut Probe) {
    if core::mem::take(&mut p.parked) {
        KEPT.fetch_sub(1, Relaxed);
        // SAFETY: a kept connection is live until `close_attempt` nulls it.
        unsafe { (*p.conn).set_idle(0) };
    }
}

/// Events of an idle kept connection: anything from the peer (data, a close, a reset) or a
/// close request from nginx ends it, quietly — it says nothing about the peer's health.
pub(super) unsafe extern "C" fn on_idle(ev: *mut ngx_event_t) {
    // SAFETY: connection events carry the connection; its `data` is our probe.
    let (c, p) = unsafe {
        let c = (*ev).data as *mut ngx_connection_t;
        (c, &mut *((*c).data as *mut Probe))
    };
    // SAFETY: `c` is live while its events are.
    unsafe {
        if (*c).close() == 0 {
            if (*ev).write() != 0 {
                return;
            }
            if peek(c) != Peek::Something {
                // Nothing (or interrupted): wait for the next event (with poll/select a ready
                // event would otherwise be taken out of the set).
                (*ev).set_ready(0);
                if ngx_handle_read_event((*c).read, 0) == OK {
                    return;
                }
            }
        }
    }
    close_attempt(p);
}
