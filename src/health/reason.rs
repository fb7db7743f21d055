//! Why the last probe of a peer passed or failed, small enough to live in two atomics of the
//! shared record and be shown on the status page and in the error log.

use core::fmt;

use super::response::ResponseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No probe has finished yet.
    None,
    Passed,
    /// The TCP connect failed at once (errno).
    ConnectFailed(u32),
    /// connect, handshake and response together took longer than `timeout`.
    Timeout,
    /// The connection was reset or broke while sending or receiving (errno, 0 if unknown).
    Io(u32),
    /// The TLS handshake failed.
    TlsHandshake,
    /// The backend's certificate was not accepted (OpenSSL verify result).
    TlsVerify(u32),
    /// The response could not be read as HTTP (stored as the error's code).
    Invalid(ResponseError),
    /// The status is not in the accepted list.
    Status(u16),
    /// The body did not match `body=~...`.
    BodyMismatch,
    /// Out of memory or a similar local problem.
    Internal,
    /// The answer did not match `expect=` (stream checks).
    ExpectMismatch,
    /// The peer closed the connection before the answer matched `expect=`.
    ClosedEarly,
    /// A UDP probe's datagram was refused (ICMP port unreachable).
    Unreachable,
}

impl Reason {
    /// For `Progress::Invalid` verdicts of the response parser.
    pub const fn invalid(e: ResponseError) -> Reason {
        Reason::Invalid(e)
    }

    pub fn encode(self) -> (u32, u32) {
        match self {
            Reason::None => (0, 0),
            Reason::Passed => (1, 0),
            Reason::ConnectFailed(e) => (2, e),
            Reason::Timeout => (3, 0),
            Reason::Io(e) => (4, e),
            Reason::TlsHandshake => (5, 0),
            Reason::TlsVerify(v) => (6, v),
            Reason::Invalid(e) => (7, e.code() as u32),
            Reason::Status(s) => (8, u32::from(s)),
            Reason::BodyMismatch => (9, 0),
            Reason::Internal => (10, 0),
            Reason::ExpectMismatch => (11, 0),
            Reason::ClosedEarly => (12, 0),
            Reason::Unreachable => (13, 0),
        }
    }

    /// The reason `encode` gave `(code, detail)`; `Reason::None` for pairs it never gives.
    pub fn decode(code: u32, detail: u32) -> Reason {
        match code {
            1 => Reason::Passed,
            2 => Reason::ConnectFailed(detail),
            3 => Reason::Timeout,
            4 => Reason::Io(detail),
            5 => Reason::TlsHandshake,
            6 => Reason::TlsVerify(detail),
            7 => ResponseError::from_code(detail).map_or(Reason::None, Reason::Invalid),
            8 => Reason::Status(detail as u16),
            9 => Reason::BodyMismatch,
            10 => Reason::Internal,
            11 => Reason::ExpectMismatch,
            12 => Reason::ClosedEarly,
            13 => Reason::Unreachable,
            _ => Reason::None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::None => f.write_str("no check yet"),
            Reason::Passed => f.write_str("passed"),
            Reason::ConnectFailed(e) => write!(f, "connect failed ({})", errno_text(e)),
            Reason::Timeout => f.write_str("timed out"),
            Reason::Io(0) => f.write_str("connection broken"),
            Reason::Io(e) => write!(f, "connection broken ({})", errno_text(e)),
            Reason::TlsHandshake => f.write_str("TLS handshake failed"),
            // X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
            Reason::TlsVerify(62) => f.write_str("certificate does not match the host name"),
            Reason::TlsVerify(64) => f.write_str("certificate does not match the IP address"),
            Reason::TlsVerify(v) => write!(f, "certificate not trusted (verify error {v})"),
            Reason::Invalid(e) => e.fmt(f),
            Reason::Status(s) => write!(f, "HTTP {s}"),
            Reason::BodyMismatch => f.write_str("body does not match"),
            Reason::Internal => f.write_str("internal error"),
            Reason::ExpectMismatch => f.write_str("answer does not match"),
            Reason::ClosedEarly => f.write_str("closed before the expected answer"),
            Reason::Unreachable => f.write_str("port unreachable"),
        }
    }
}

fn errno_text(e: u32) -> String {
    match i32::try_from(e).unwrap_or(0) {
        libc::ECONNRESET => "connection reset".into(),
        libc::ETIMEDOUT => "timed out".into(),
        libc::ECONNREFUSED => "connection refused".into(),
        libc::EHOSTUNREACH => "no route to host".into(),
        _ => format!("errno {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for r in [
            Reason::None,
            Reason::Passed,
            Reason::ConnectFailed(111),
            Reason::Timeout,
            Reason::Io(104),
            Reason::TlsHandshake,
            Reason::TlsVerify(18),
            Reason::Invalid(ResponseError::StatusLine),
            Reason::Status(500),
            Reason::BodyMismatch,
            Reason::Internal,
            Reason::ExpectMismatch,
            Reason::ClosedEarly,
            Reason::Unreachable,
        ] {
            let (c, d) = r.encode();
            assert_eq!(Reason::decode(c, d), r);
        }
    }

    #[test]
    fn messages() {
        assert_eq!(Reason::Status(500).to_string(), "HTTP 500");
        assert_eq!(
            Reason::TlsVerify(64).to_string(),
            "certificate does not match the IP address"
        );
        assert_eq!(
            Reason::TlsVerify(20).to_string(),
            "certificate not trusted (verify error 20)"
        );
        assert_eq!(
            Reason::ConnectFailed(111).to_string(),
            "connect failed (connection refused)"
        );
        assert_eq!(
            Reason::invalid(ResponseError::StatusLine).to_string(),
            "malformed status line"
        );
        // Every parser error survives shared memory and shows its own text.
        for e in ResponseError::ALL {
            let (c, d) = Reason::invalid(e).encode();
            assert_eq!(Reason::decode(c, d), Reason::Invalid(e));
            assert_eq!(Reason::decode(c, d).to_string(), e.to_string());
        }
        // A detail no error has (not written by this module) reads as no result.
        assert_eq!(Reason::decode(7, 10), Reason::None);
        assert_eq!(Reason::decode(7, u32::MAX), Reason::None);
    }
}
