//! A probe's connection: opening it (non-blocking connect), its events and deadline, closing it.

use super::*;

/// Sets the port of an IPv4 or IPv6 socket address (same offset in both).
///
/// # Safety
/// `sa` must point to a socket address of at least 4 bytes.
pub(super) unsafe fn set_port(sa: *mut u8, port: u16) {
    // SAFETY: the family is the first two bytes, the port the next two, for AF_INET and AF_INET6.
    unsafe {
        let family = ptr::read_unaligned(sa as *const u16);
        if i32::from(family) == libc::AF_INET || i32::from(family) == libc::AF_INET6 {
            ptr::write_unaligned(sa.add(2) as *mut u16, port.to_be());
        }
    }
}

/// A kept connection failed before any byte of the answer: the peer most likely closed it while
/// idle (keepalive timeout or request limit) just as we sent. Not the peer's answer: try again
/// on a new connection, within the same deadline. Returns false when the failure stands.
pub(super) fn retry_fresh(p: &mut Probe) -> bool {
    if !p.reused || !p.buf.is_empty() || now_ms() >= p.deadline {
        return false;
    }
    close_attempt(p);
    p.sent = 0;
    connect(p);
    true
}

/// Opens a new connection for the attempt.
pub(super) fn connect(p: &mut Probe) {
    p.reused = false;
    p.connected_at = now_ms();
    // SAFETY: the pool and the peer connection are ours for the attempt; `ngx_event_connect_peer`
    // fills in `pc.connection` or closes what it opened.
    unsafe {
        // Only TLS needs a pool (nginx allocates its connection state from it).
        if check_type(p.setup().conf.kind).tls {
            p.pool = ngx_create_pool(4096, p.log);
            if p.pool.is_null() {
                return abandon(p);
            }
        }
        p.pc = core::mem::zeroed();
        p.pc.sockaddr = p.addr as *mut sockaddr;
        p.pc.socklen = p.socklen;
        p.pc.name = p.name;
        p.pc.get = Some(ngx_event_get_peer);
        if check_type(p.setup().conf.kind).udp {
            p.pc.type_ = libc::SOCK_DGRAM;
        }
        p.pc.log = p.log;
        p.pc.set_log_error(nginx_sys::ngx_connection_log_error_e_NGX_ERROR_ERR as _);
        p.stage = Stage::Connecting;
        let rc = ngx_event_connect_peer(&mut p.pc);
        if rc == crate::shell::nginx::DECLINED {
            // connect() itself failed: that is the peer's answer.
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as u32;
            p.pc.connection = ptr::null_mut();
            return finish(p, Reason::ConnectFailed(errno));
        }
        if rc == ERROR || rc == crate::shell::nginx::BUSY {
            // No socket, no free connection, no event registration: this worker's problem.
            p.pc.connection = ptr::null_mut();
            return abandon(p);
        }
        let c = p.pc.connection;
        p.conn = c;
        // The probe's root pointer (as allocated), not one derived from `p`, which ends with
        // this call.
        (*c).data = p.this as *mut c_void;
        (*c).pool = p.pool;
        (*c).log = p.log;
        (*(*c).read).log = p.log;
        (*(*c).write).log = p.log;
        (*(*c).read).handler = Some(on_event);
        (*(*c).write).handler = Some(on_event);
        if rc == AGAIN {
            arm(p, (*c).write);
            return;
        }
        connected(p);
    }
}

/// Sets `ev`'s timer to the time left before the probe's deadline.
///
/// # Safety
/// `ev` must be an event of the probe's live connection.
pub(super) unsafe fn arm(p: &Probe, ev: *mut ngx_event_t) {
    let left = p.deadline.saturating_sub(now_ms()).max(1);
    // SAFETY: guaranteed by the caller.
    unsafe { nginx_sys::ngx_add_timer(ev, left as _) };
}

pub(super) unsafe extern "C" fn on_event(ev: *mut ngx_event_t) {
    // SAFETY: connection events carry the connection; its `data` is our probe.
    let (c, p) = unsafe {
        let c = (*ev).data as *mut ngx_connection_t;
        (c, &mut *((*c).data as *mut Probe))
    };
    // SAFETY: `c` is live while its events are.
    if unsafe { (*c).close() } != 0 {
        // worker_shutdown_timeout closes everything: no verdict.
        return abandon(p);
    }
    // SAFETY: `ev` is live while the connection is.
    if unsafe { (*ev).timedout() } != 0 {
        // A stream check that got an answer, but not the expected one, says so.
        let mismatch =
            p.stage == Stage::Reading && !p.buf.is_empty() && !p.setup().conf.kind.is_http();
        return finish(
            p,
            if mismatch {
                Reason::ExpectMismatch
            } else {
                Reason::Timeout
            },
        );
    }
    match p.stage {
        Stage::Connecting => {
            let err = socket_error(p.conn);
            if err != 0 {
                return finish(p, Reason::ConnectFailed(err));
            }
            connected(p)
        }
        Stage::Sending => send(p),
        Stage::Reading => (check_type(p.setup().conf.kind).read)(p),
        Stage::Handshaking | Stage::Idle => {}
    }
}

/// The pending error of a non-blocking connect (`SO_ERROR`).
pub(super) fn socket_error(c: *mut ngx_connection_t) -> u32 {
    let mut err: i32 = 0;
    let mut len = core::mem::size_of::<i32>() as socklen_t;
    // SAFETY: `c->fd` is an open socket; `err`/`len` are valid for writing.
    let rc = unsafe {
        nginx_sys::getsockopt(
            (*c).fd,
            nginx_sys::SOL_SOCKET as _,
            nginx_sys::SO_ERROR as _,
            &mut err as *mut i32 as *mut c_void,
            &mut len,
        )
    };
    if rc == -1 {
        return std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as u32;
    }
    err as u32
}

pub(super) fn connected(p: &mut Probe) {
    let t = check_type(p.setup().conf.kind);
    if t.tls {
        handshake(p)
    } else {
        (t.exchange)(p)
    }
}

/// Closes the attempt's (or the kept) connection and frees its pool.
pub(super) fn close_attempt(p: &mut Probe) {
    if !p.conn.is_null() {
        unpark(p);
    }
    // SAFETY: `conn` and `pool` are ours and not used after this.
    unsafe {
        let c = p.conn;
        if !c.is_null() {
            if !(*c).ssl.is_null() {
                keep_tls_session(p, c);
                (*(*c).ssl).set_no_wait_shutdown(1);
                (*(*c).ssl).set_no_send_shutdown(1);
                ngx_ssl_shutdown(c);
            }
            // Closed with a reset rather than a FIN: no closing handshake and no TIME_WAIT
            // socket per probe (as HAProxy does for its checks); nothing is left unsent.
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            libc::setsockopt(
                (*c).fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const c_void,
                core::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
            ngx_close_connection(c);
            p.conn = ptr::null_mut();
        }
        if !p.pool.is_null() {
            ngx_destroy_pool(p.pool);
            p.pool = ptr::null_mut();
        }
    }
    p.stage = Stage::Idle;
    reset_buf(p);
    reap_later(p);
}

/// True when nothing is pending on connection `c`: no end of stream or error seen, no data
/// buffered in TLS or waiting in the socket. (A kept connection must not carry anything
/// between two probes: stale bytes would be read as the next answer.)
pub(super) fn quiet(c: *mut ngx_connection_t) -> bool {
    // SAFETY: `c` is our live connection; the peek reads nothing out of the socket.
    unsafe {
        let (rev, wev) = (&*(*c).read, &*(*c).write);
        if rev.eof() != 0 || rev.error() != 0 || rev.pending_eof() != 0 || wev.error() != 0 {
            return false;
        }
        let ssl = (*c).ssl;
        if !ssl.is_null()
            && (nginx_sys::SSL_pending((*ssl).connection) > 0
                || (*ssl).last == crate::shell::nginx::DONE
                || (*ssl).last == ERROR)
        {
            return false;
        }
        peek(c) == Peek::Nothing
    }
}
