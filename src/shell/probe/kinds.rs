//! The check types, as a table: whether a type starts with a TLS handshake, and what a probe of
//! that type does on the open connection. A new type (say `grpc`, or a stream `send`/`expect`)
//! is a file with its exchange plus one line in `check_type` (and its name in
//! `health::config::Kind`).

use super::*;

pub(super) struct CheckType {
    /// A TLS handshake (SNI, verification, session resumption) comes first.
    pub tls: bool,
    /// What the probe does once the connection is open (and, with `tls`, handshaken); it ends
    /// with `finish`.
    pub exchange: fn(&mut Probe),
}

/// The table: one line per type.
pub(super) fn check_type(kind: Kind) -> &'static CheckType {
    match kind {
        Kind::Tcp => &TCP,
        Kind::Http => &HTTP,
        Kind::Https => &HTTPS,
    }
}

/// `type=tcp`: the connection opened, the peer is up.
static TCP: CheckType = CheckType {
    tls: false,
    exchange: connect_only,
};
/// `type=http`: an HTTP/1 request, the answer judged (`http.rs`).
static HTTP: CheckType = CheckType {
    tls: false,
    exchange: http_exchange,
};
/// `type=https`: the same over TLS.
static HTTPS: CheckType = CheckType {
    tls: true,
    exchange: http_exchange,
};

fn connect_only(p: &mut Probe) {
    finish(p, Reason::Passed)
}
