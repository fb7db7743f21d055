//! The exchange of stream checks (`type=tcp`, `udp`, `tls` with `send=`/`expect=`): send the
//! bytes of `send=` (if any), read the answer, and pass once its first bytes match `expect=`
//! (a PCRE pattern with `expect=~`, else a byte prefix). Without `send` and `expect` a
//! connected (TCP) or handshaken (TLS) peer passes at once.
//!
//! UDP: the datagram is sent on a connected UDP socket, and the first datagram back is the
//! whole answer. A peer whose port is closed answers with ICMP port unreachable, which the
//! socket reports as `ECONNREFUSED`: the probe fails with "port unreachable" at once instead
//! of waiting for `timeout`.

use super::*;
use crate::health::config::Expect;

/// Once connected (and, for `tls`, handshaken).
pub(super) fn stream_exchange(p: &mut Probe) {
    let conf = &p.setup().conf;
    if p.request.is_empty() && conf.expect.is_none() {
        return finish(p, Reason::Passed);
    }
    // `http::send` writes `request` (here `send=`, maybe nothing for a banner) and then reads
    // with the type's reader, `read` below.
    p.stage = Stage::Sending;
    send(p)
}

/// Reads what the peer sends until it matches `expect=`, cannot match any more, the peer
/// closes, or the deadline passes.
pub(super) fn read(p: &mut Probe) {
    let c = p.conn;
    let udp = p.setup().conf.kind == Kind::Udp;
    loop {
        let room = MAX_RESPONSE.saturating_sub(p.buf.len());
        if room == 0 {
            return finish(p, Reason::ExpectMismatch);
        }
        p.buf.reserve(room.min(2048));
        let room = room.min(p.buf.capacity() - p.buf.len());
        // SAFETY: `recv` writes at most `room` bytes into the reserved spare capacity, and we
        // only extend the length by what it reports.
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
        } else if n == AGAIN {
            // SAFETY: `c` is our live connection.
            if unsafe { ngx_handle_read_event((*c).read, 0) } != OK {
                return abandon(p);
            }
            return;
        } else if n == 0 {
            let why = verdict(p, true).unwrap_or(Reason::ClosedEarly);
            return finish(p, why);
        } else {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if !p.buf.is_empty() {
                // A peer that answers and closes while our `send=` is still unread resets the
                // connection: judge the answer it gave.
                let why = verdict(p, true).unwrap_or(Reason::ExpectMismatch);
                return finish(p, why);
            }
            return finish(
                p,
                if errno == libc::ECONNREFUSED && udp {
                    Reason::Unreachable
                } else {
                    Reason::Io(errno as u32)
                },
            );
        }
        // A datagram is the whole answer; a stream may still bring the rest.
        if let Some(why) = verdict(p, udp) {
            return finish(p, why);
        }
    }
}

/// Whether the answer so far decides the probe; `done`: nothing more will come.
fn verdict(p: &Probe, done: bool) -> Option<Reason> {
    let answer = &p.buf[..];
    let decided = match &p.setup().conf.expect {
        // UDP without `expect=`: any reply passes.
        None => (!answer.is_empty()).then_some(true),
        Some(Expect::Prefix(want)) => Expect::prefix_verdict(want, answer),
        Some(Expect::Regex(_)) => {
            let mut s = ngx_str_t {
                len: answer.len(),
                data: answer.as_ptr() as *mut u8,
            };
            // SAFETY: the regex was compiled at configuration time; `s` points into `answer`.
            let rc = unsafe { ngx_regex_exec(p.setup().expect_regex, &mut s, ptr::null_mut(), 0) };
            if rc >= 0 {
                Some(true)
            } else if rc != nginx_sys::NGX_REGEX_NO_MATCHED as ngx_int_t {
                return Some(Reason::Internal);
            } else {
                None
            }
        }
    };
    match decided {
        Some(true) => Some(Reason::Passed),
        Some(false) => Some(Reason::ExpectMismatch),
        None if done && answer.is_empty() => Some(Reason::ClosedEarly),
        None if done => Some(Reason::ExpectMismatch),
        None => None,
    }
}
