//! The arguments of `lb_upstream`: which balancing method an upstream uses, and its settings.

use crate::conf::error::InvalidValue;
use crate::conf::time::parse_time_ms;

/// The most `max_resolved=` takes.
pub const MAX_RESOLVED: usize = 1_000_000;

/// The most `max_added=` takes.
pub const MAX_ADDED: usize = 100_000;

/// Peers `lb_api` may add to an upstream with `zone`, unless `max_added=` says otherwise.
pub const DEFAULT_MAX_ADDED: usize = 32;

/// How quickly the moving average of response times forgets, unless `decay=` says otherwise.
pub const DEFAULT_DECAY_MS: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Smooth weighted round-robin, nginx's own order.
    #[default]
    RoundRobin,
    /// Fewest active connections relative to weight (over all workers).
    LeastConn,
    /// Power of two random choices on active connections × response time.
    P2c,
}

/// A parsed `lb_upstream` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodConf {
    pub method: Method,
    /// Time constant of the response-time average, ms.
    pub decay_ms: u64,
    /// `max_resolved=N`: how many addresses the upstream's `server ... resolve` names may
    /// have at once (`None`: the default).
    pub max_resolved: Option<usize>,
    /// `max_added=N`: how many peers `lb_api` may add to the upstream (`None`: the default).
    pub max_added: Option<usize>,
}

impl Default for MethodConf {
    fn default() -> Self {
        MethodConf {
            method: Method::RoundRobin,
            decay_ms: DEFAULT_DECAY_MS,
            max_resolved: None,
            max_added: None,
        }
    }
}

impl Method {
    pub const NAMES: &'static [&'static str] = &["round_robin", "least_conn", "p2c"];

    pub fn name(self) -> &'static str {
        match self {
            Method::RoundRobin => "round_robin",
            Method::LeastConn => "least_conn",
            Method::P2c => "p2c",
        }
    }
}

/// What is wrong with an `lb_upstream` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    /// `decay=` is not a positive time.
    #[error(transparent)]
    Decay(#[from] InvalidValue),
    /// A second method, or anything else after the method.
    #[error(
        "unexpected parameter \"{}\" (one method, then optionally decay=TIME, max_resolved=N and max_added=N)",
        .0.escape_ascii()
    )]
    Unexpected(Vec<u8>),
    #[error(
        "unknown balancing method \"{}\" (expected one of: {})",
        .0.escape_ascii(),
        Method::NAMES.join(", ")
    )]
    UnknownMethod(Vec<u8>),
    #[error("\"decay\" applies to the p2c method only")]
    DecayWithoutP2c,
}

/// Parses the arguments of `lb_upstream` (without the directive name):
/// `[round_robin | least_conn | p2c] [decay=TIME] [max_resolved=N] [max_added=N]`.
pub fn parse(args: &[&[u8]]) -> Result<MethodConf, MethodError> {
    let mut conf = MethodConf::default();
    let mut method_seen = false;
    let mut decay_seen = false;
    for arg in args {
        if let Some(v) = arg.strip_prefix(b"decay=") {
            conf.decay_ms = match parse_time_ms(v) {
                Some(ms) if ms > 0 => ms,
                _ => {
                    return Err(InvalidValue::new(
                        b"decay",
                        v,
                        "expected a positive time such as 10s",
                    )
                    .into())
                }
            };
            decay_seen = true;
            continue;
        }
        if let Some(v) = arg.strip_prefix(b"max_resolved=") {
            conf.max_resolved = match crate::conf::number::decimal(v) {
                Some(n) if (1..=MAX_RESOLVED).contains(&n) => Some(n),
                _ => {
                    return Err(InvalidValue::new(
                        b"max_resolved",
                        v,
                        "expected a number of addresses from 1 to 1000000",
                    )
                    .into())
                }
            };
            continue;
        }
        if let Some(v) = arg.strip_prefix(b"max_added=") {
            conf.max_added = match crate::conf::number::decimal(v) {
                Some(n) if n <= MAX_ADDED => Some(n),
                _ => {
                    return Err(InvalidValue::new(
                        b"max_added",
                        v,
                        "expected a number of peers from 0 to 100000",
                    )
                    .into())
                }
            };
            continue;
        }
        if method_seen {
            return Err(MethodError::Unexpected(arg.to_vec()));
        }
        conf.method = match *arg {
            b"round_robin" => Method::RoundRobin,
            b"least_conn" => Method::LeastConn,
            b"p2c" => Method::P2c,
            other => return Err(MethodError::UnknownMethod(other.to_vec())),
        };
        method_seen = true;
    }
    if decay_seen && conf.method != Method::P2c {
        return Err(MethodError::DecayWithoutP2c);
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<MethodConf, MethodError> {
        let args: Vec<&[u8]> = s.split_whitespace().map(str::as_bytes).collect();
        parse(&args)
    }

    #[test]
    fn parses() {
        assert_eq!(p("").unwrap().method, Method::RoundRobin);
        assert_eq!(p("round_robin").unwrap().method, Method::RoundRobin);
        assert_eq!(p("least_conn").unwrap().method, Method::LeastConn);
        let c = p("p2c decay=2s").unwrap();
        assert_eq!((c.method, c.decay_ms), (Method::P2c, 2000));
        assert_eq!(p("p2c").unwrap().decay_ms, DEFAULT_DECAY_MS);
        // nginx's time syntax: combined units, a bare number in seconds.
        assert_eq!(p("p2c decay=1m30s").unwrap().decay_ms, 90_000);
        assert_eq!(p("p2c decay=10").unwrap().decay_ms, 10_000);
        assert_eq!(Method::LeastConn.name(), "least_conn");
        assert_eq!(
            p("least_conn max_resolved=1000").unwrap().max_resolved,
            Some(1000)
        );
        assert_eq!(p("").unwrap().max_resolved, None);
        assert_eq!(p("p2c max_added=0").unwrap().max_added, Some(0));
        assert_eq!(p("max_added=500").unwrap().max_added, Some(500));
        assert_eq!(p("").unwrap().max_added, None);
    }

    #[test]
    fn errors() {
        let decay = |v: &str| {
            MethodError::Decay(InvalidValue::new(
                b"decay",
                v.as_bytes(),
                "expected a positive time such as 10s",
            ))
        };
        assert_eq!(
            p("fastest"),
            Err(MethodError::UnknownMethod(b"fastest".to_vec()))
        );
        assert_eq!(p("p2c decay=0"), Err(decay("0")));
        assert_eq!(p("p2c decay=soon"), Err(decay("soon")));
        assert_eq!(p("least_conn decay=1s"), Err(MethodError::DecayWithoutP2c));
        // Digits only, as nginx's own directives read numbers (Rust's parse takes a `+`).
        for line in [
            "max_added=+5",
            "max_resolved=+5",
            "max_added= 5",
            "max_resolved=5k",
        ] {
            assert!(p(line).is_err(), "{line}");
        }
        assert_eq!(
            p("least_conn p2c"),
            Err(MethodError::Unexpected(b"p2c".to_vec()))
        );
    }

    /// The texts nginx prints after "lb_upstream: " (t/ asserts some of them).
    #[test]
    fn messages() {
        let text = |s: &str| p(s).unwrap_err().to_string();
        assert_eq!(
            text("fastest"),
            "unknown balancing method \"fastest\" (expected one of: round_robin, least_conn, p2c)"
        );
        assert_eq!(
            text("p2c decay=0"),
            "invalid value \"0\" for \"decay\": expected a positive time such as 10s"
        );
        assert_eq!(
            text("least_conn decay=1s"),
            "\"decay\" applies to the p2c method only"
        );
        assert_eq!(
            text("least_conn p2c"),
            "unexpected parameter \"p2c\" (one method, then optionally decay=TIME, max_resolved=N and max_added=N)"
        );
        assert_eq!(
            text("max_resolved=0"),
            "invalid value \"0\" for \"max_resolved\": expected a number of addresses from 1 to 1000000"
        );
        assert_eq!(
            text("max_added=-1"),
            "invalid value \"-1\" for \"max_added\": expected a number of peers from 0 to 100000"
        );
    }
}
