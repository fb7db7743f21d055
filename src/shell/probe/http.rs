//! The HTTP/1 exchange of a probe: sending the request, reading the answer, judging it.

use super::*;

/// `type=http` and `type=https` once connected: send the request, then read and judge.
pub(super) fn http_exchange(p: &mut Probe) {
    p.stage = Stage::Sending;
    send(p)
}

pub(super) fn send(p: &mut Probe) {
    let c = p.conn;
    // SAFETY: `c` is our live connection; `send` writes from our request buffer.
    unsafe {
        while p.sent < p.request.len() {
            let Some(send) = (*c).send else {
                return abandon(p);
            };
            let n = send(
                c,
                p.request.as_mut_ptr().add(p.sent),
                p.request.len() - p.sent,
            );
            if n == AGAIN {
                if ngx_handle_write_event((*c).write, 0) != OK {
                    return abandon(p);
                }
                arm(p, (*c).write);
                return;
            }
            if n <= 0 {
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if retry_fresh(p) {
                    return;
                }
                return finish(p, Reason::Io(errno as u32));
            }
            p.sent += n as usize;
        }
        if (*(*c).write).timer_set() != 0 {
            nginx_sys::ngx_del_timer((*c).write);
        }
        // Done writing: with level-triggered event methods (poll, select) the write event must
        // be removed or every loop turn would wake us up (a no-op with epoll).
        if ngx_handle_write_event((*c).write, 0) != OK {
            return abandon(p);
        }
        p.stage = Stage::Reading;
        arm(p, (*c).read);
        (check_type(p.setup().conf.kind).read)(p)
    }
}

pub(super) fn read(p: &mut Probe) {
    let c = p.conn;
    let head = p.setup().conf.method == HttpMethod::Head;
    loop {
        // One byte more than the limit, so that an oversized response is recognised.
        let room = (MAX_RESPONSE + 1).saturating_sub(p.buf.len());
        let mut eof = room == 0;
        let mut broken = 0u32;
        if room > 0 {
            // Health answers are small: grow the buffer in steps rather than reserving the
            // whole limit for every probe.
            p.buf.reserve(room.min(2048));
            let room = room.min(p.buf.capacity() - p.buf.len());
            // SAFETY: `recv` writes at most `room` bytes into the reserved spare capacity,
            // and we only extend the length by what it reports.
            let n = unsafe {
                let Some(recv) = (*c).recv else {
                    return abandon(p);
                };
                let spare = p.buf.as_mut_ptr().add(p.buf.len());
                recv(c, spare, room)
            };
            if n > 0 {
                // SAFETY: `recv` initialised `n` bytes of the spare capacity.
                unsafe { p.buf.set_len(p.buf.len() + n as usize) };
            } else if n == 0 {
                eof = true;
            } else if n == AGAIN {
                // fall through to parse what we have
            } else {
                eof = true;
                broken = std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as u32;
            }
            match p.parser.parse(&p.buf, eof, head) {
                Progress::NeedMore if n == AGAIN => {
                    // SAFETY: `c` is our live connection.
                    if unsafe { ngx_handle_read_event((*c).read, 0) } != OK {
                        return abandon(p);
                    }
                    return;
                }
                Progress::NeedMore => continue,
                Progress::Complete {
                    status,
                    body,
                    reusable,
                } => {
                    p.reusable = reusable;
                    return judge(p, status, &body);
                }
                Progress::Invalid(_) if eof && retry_fresh(p) => return,
                Progress::Invalid(_) if broken != 0 => return finish(p, Reason::Io(broken)),
                Progress::Invalid(why) => return finish(p, Reason::invalid(why)),
            }
        }
        match p.parser.parse(&p.buf, eof, head) {
            Progress::Complete { status, body, .. } => return judge(p, status, &body),
            Progress::Invalid(why) => return finish(p, Reason::invalid(why)),
            Progress::NeedMore => return finish(p, Reason::invalid(ResponseError::TooLong)),
        }
    }
}

pub(super) fn judge(p: &mut Probe, status: u16, body: &[u8]) {
    crate::shell::nginx::lb_debug!(
        super::cycle_log(),
        "lb: probe of peer {} in {}upstream \"{}\" answered: status {}, {} body byte(s){}",
        // SAFETY: the probe's name lives as long as the probe.
        crate::shell::nginx::bytes(unsafe { &*p.name }).escape_ascii(),
        p.upstream().kind.prefix(),
        crate::shell::nginx::bytes(&p.upstream().name).escape_ascii(),
        status,
        body.len(),
        if p.reused {
            ", on a kept connection"
        } else {
            ""
        }
    );
    let conf = &p.setup().conf;
    if !conf.status.contains(status) {
        return finish(p, Reason::Status(status));
    }
    let re = p.setup().regex;
    if !re.is_null() {
        let mut s = ngx_str_t {
            len: body.len(),
            data: body.as_ptr() as *mut u8,
        };
        // SAFETY: the regex was compiled at configuration time; `s` points into `body`.
        let rc = unsafe { ngx_regex_exec(re, &mut s, ptr::null_mut(), 0) };
        if rc < 0 {
            return finish(
                p,
                if rc == nginx_sys::NGX_REGEX_NO_MATCHED as ngx_int_t {
                    Reason::BodyMismatch
                } else {
                    Reason::Internal
                },
            );
        }
    }
    finish(p, Reason::Passed)
}

/// Empties the response buffer: a small one is kept for the next probe, a large one given back.
pub(super) fn reset_buf(p: &mut Probe) {
    if p.buf.capacity() > 4096 {
        p.buf = Vec::new();
    } else {
        p.buf.clear();
    }
    p.parser = Parser::default();
}
