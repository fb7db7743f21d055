//! TLS to the peer for `https` checks: the handshake (SNI, verification, session resumption).

use super::*;

pub(super) fn handshake(p: &mut Probe) {
    let c = p.conn;
    // SAFETY: the TLS context was created at configuration time; `c` is our live connection.
    unsafe {
        if (*c).write.as_ref().is_some_and(|w| w.timer_set() != 0) {
            nginx_sys::ngx_del_timer((*c).write);
        }
        if ngx_ssl_create_connection(p.setup().ssl, c, (NGX_SSL_BUFFER | NGX_SSL_CLIENT) as _) != OK
        {
            // Out of memory in this worker: says nothing about the peer.
            return abandon(p);
        }
        if let Some(name) = &p.sni {
            // SSL_set_tlsext_host_name(ssl, name) is a macro over SSL_ctrl.
            nginx_sys::SSL_ctrl(
                (*(*c).ssl).connection,
                nginx_sys::SSL_CTRL_SET_TLSEXT_HOSTNAME as _,
                nginx_sys::TLSEXT_NAMETYPE_host_name as _,
                name.as_ptr() as *mut c_void,
            );
        }
        // Resume the peer's last session (an abbreviated handshake), if there is one.
        let session = p.tls_session();
        if !session.is_null() && nginx_sys::ngx_ssl_set_session(c, session) != OK {
            // Not resumable after all: a full handshake, and no second try with it.
            nginx_sys::SSL_SESSION_free(p.replace_tls_session(ptr::null_mut()));
        }
        if let Some(ip) = &p.verify_ip {
            // No name to check: the chain verification also checks that the certificate names
            // the address (an IP subjectAltName); a mismatch is X509_V_ERR_IP_ADDRESS_MISMATCH.
            let param = nginx_sys::SSL_get0_param((*(*c).ssl).connection);
            if nginx_sys::X509_VERIFY_PARAM_set1_ip_asc(param, ip.as_ptr()) != 1 {
                return abandon(p);
            }
        }
        p.stage = Stage::Handshaking;
        let rc = ngx_ssl_handshake(c);
        if rc == AGAIN {
            (*(*c).ssl).handler = Some(handshake_done);
            arm(p, (*c).read);
            return;
        }
        after_handshake(p);
    }
}

/// nginx's TLS code calls this when the handshake ends (or times out, or the worker closes
/// connections).
pub(super) unsafe extern "C" fn handshake_done(c: *mut ngx_connection_t) {
    // SAFETY: called with our connection, whose `data` is our probe.
    unsafe { after_handshake(&mut *((*c).data as *mut Probe)) }
}

pub(super) fn after_handshake(p: &mut Probe) {
    let c = p.conn;
    // SAFETY: `c` is our live connection with a TLS object.
    unsafe {
        if (*c).close() != 0 {
            return abandon(p);
        }
        if (*(*c).read).timedout() != 0 || (*(*c).write).timedout() != 0 {
            return finish(p, Reason::Timeout);
        }
        if (*(*c).ssl).handshaked() == 0 {
            return finish(p, Reason::TlsHandshake);
        }
        if p.setup().conf.verify {
            let v = nginx_sys::SSL_get_verify_result((*(*c).ssl).connection);
            if v != nginx_sys::X509_V_OK as core::ffi::c_long {
                return finish(p, Reason::TlsVerify(v as u32));
            }
            if let Some(name) = &p.verify_name {
                let mut s = ngx_str_t {
                    len: name.as_bytes().len(),
                    data: name.as_ptr() as *mut u8,
                };
                if ngx_ssl_check_host(c, &mut s) != OK {
                    return finish(
                        p,
                        Reason::TlsVerify(nginx_sys::X509_V_ERR_HOSTNAME_MISMATCH),
                    );
                }
            }
        }
        if (*(*c).read).timer_set() != 0 {
            nginx_sys::ngx_del_timer((*c).read);
        }
        (*(*c).read).handler = Some(on_event);
        (*(*c).write).handler = Some(on_event);
        (check_type(p.setup().conf.kind).exchange)(p)
    }
}

/// Keeps the session of a TLS connection about to close, when it can be resumed (with TLS 1.3
/// only once the server's session ticket has arrived; otherwise the previous one stays).
///
/// # Safety
/// `c` must be the probe's live connection, with a TLS object.
pub(super) unsafe fn keep_tls_session(p: &mut Probe, c: *mut ngx_connection_t) {
    // SAFETY: guaranteed by the caller; SSL_get1_session returns a new reference (or null),
    // which the peer's watch owns from here, releasing the one it replaces.
    unsafe {
        let ssl = (*(*c).ssl).connection;
        // Not with verify=on: a resumed session carries the verdict of its first handshake
        // (chain, expiry, name), and each new connection must check the certificate afresh.
        if (*(*c).ssl).handshaked() == 0 || p.setup().conf.verify {
            return;
        }
        let session = nginx_sys::SSL_get1_session(ssl);
        if session.is_null() {
            return;
        }
        if nginx_sys::SSL_SESSION_is_resumable(session) != 1 {
            nginx_sys::SSL_SESSION_free(session);
            return;
        }
        let old = p.replace_tls_session(session);
        if !old.is_null() {
            nginx_sys::SSL_SESSION_free(old);
        }
    }
}
