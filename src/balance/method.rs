//! The arguments of `lb_upstream`: which balancing method an upstream uses, and its settings.

use crate::conf::time::parse_time_ms;

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
}

impl Default for MethodConf {
    fn default() -> Self {
        MethodConf {
            method: Method::RoundRobin,
            decay_ms: DEFAULT_DECAY_MS,
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

/// Parses the arguments of `lb_upstream` (without the directive name):
/// `[round_robin | least_conn | p2c] [decay=TIME]`.
pub fn parse(args: &[&[u8]]) -> Result<MethodConf, String> {
    let mut conf = MethodConf::default();
    let mut method_seen = false;
    let mut decay_seen = false;
    for arg in args {
        if let Some(v) = arg.strip_prefix(b"decay=") {
            conf.decay_ms = match parse_time_ms(v) {
                Some(ms) if ms > 0 => ms,
                _ => {
                    return Err(format!(
                        "invalid value \"{}\" for \"decay\": expected a positive time such as 10s",
                        v.escape_ascii()
                    ))
                }
            };
            decay_seen = true;
            continue;
        }
        if method_seen {
            return Err(format!(
                "unexpected parameter \"{}\" (one method, then optionally decay=TIME)",
                arg.escape_ascii()
            ));
        }
        conf.method = match *arg {
            b"round_robin" => Method::RoundRobin,
            b"least_conn" => Method::LeastConn,
            b"p2c" => Method::P2c,
            other => {
                return Err(format!(
                    "unknown balancing method \"{}\" (expected one of: {})",
                    other.escape_ascii(),
                    Method::NAMES.join(", ")
                ))
            }
        };
        method_seen = true;
    }
    if decay_seen && conf.method != Method::P2c {
        return Err("\"decay\" applies to the p2c method only".into());
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<MethodConf, String> {
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
    }

    #[test]
    fn errors() {
        assert!(p("fastest").unwrap_err().contains("\"fastest\""));
        assert!(p("p2c decay=0").unwrap_err().contains("\"decay\""));
        assert!(p("p2c decay=soon").unwrap_err().contains("\"soon\""));
        assert!(p("least_conn decay=1s")
            .unwrap_err()
            .contains("p2c method only"));
        assert!(p("least_conn p2c").unwrap_err().contains("\"p2c\""));
    }
}
