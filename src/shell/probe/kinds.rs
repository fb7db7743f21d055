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
    /// Reads the answer once the request is sent (and again on each read event).
    pub read: fn(&mut Probe),
    /// The socket type to connect: `SOCK_STREAM`, or `SOCK_DGRAM` for UDP.
    pub udp: bool,
}

/// The table: one line per type.
pub(super) fn check_type(kind: Kind) -> &'static CheckType {
    match kind {
        Kind::Tcp => &TCP,
        Kind::Http => &HTTP,
        Kind::Https => &HTTPS,
        Kind::Udp => &UDP,
        Kind::Tls => &TLS,
    }
}

/// `type=tcp`: the connection opened, the peer is up; with `send=`/`expect=`, once its
/// answer matches (`expect.rs`).
static TCP: CheckType = CheckType {
    tls: false,
    exchange: stream_exchange,
    read: expect::read,
    udp: false,
};
/// `type=http`: an HTTP/1 request, the answer judged (`http.rs`).
static HTTP: CheckType = CheckType {
    tls: false,
    exchange: http_exchange,
    read: http::read,
    udp: false,
};
/// `type=https`: the same over TLS.
static HTTPS: CheckType = CheckType {
    tls: true,
    exchange: http_exchange,
    read: http::read,
    udp: false,
};
/// `type=udp`: a datagram, and a reply that matches `expect=` within `timeout`.
static UDP: CheckType = CheckType {
    tls: false,
    exchange: stream_exchange,
    read: expect::read,
    udp: true,
};
/// `type=tls`: the handshake (SNI, verification as for https), then as `tcp`.
static TLS: CheckType = CheckType {
    tls: true,
    exchange: stream_exchange,
    read: expect::read,
    udp: false,
};
