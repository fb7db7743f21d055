//! `lb_outlier`: passive outlier ejection, as Envoy does it. A peer that answers
//! `consecutive_5xx` responses with status 500 or more in a row, or fails `consecutive_errors`
//! attempts in a row (connect errors, timeouts: no response), is ejected: it gets no request for
//! `base_ejection × times ejected` (at most `max_ejection`), then comes back. Never more than
//! `max_percent` of an upstream's peers are ejected at once. Counters are shared by all workers
//! (`shm::PeerShared`); this module holds the configuration and the arithmetic.

use crate::conf::error::{InvalidValue, NotKeyValue};
use crate::conf::time::parse_time_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConf {
    /// Responses with status >= 500 in a row that eject a peer; 0: not counted.
    pub consecutive_5xx: u32,
    /// Failed attempts without a response in a row that eject a peer; 0: not counted.
    pub consecutive_errors: u32,
    pub base_ejection_ms: u64,
    pub max_ejection_ms: u64,
    /// Peers of an upstream that may be ejected at once, percent.
    pub max_percent: u32,
}

impl Default for OutlierConf {
    /// Envoy's defaults.
    fn default() -> Self {
        OutlierConf {
            consecutive_5xx: 5,
            consecutive_errors: 5,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_percent: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutlierError {
    #[error(transparent)]
    Value(#[from] InvalidValue),
    #[error(transparent)]
    NotKeyValue(#[from] NotKeyValue),
    #[error(
        "unknown parameter \"{}\" (expected consecutive_5xx, consecutive_errors, \
         base_ejection, max_ejection or max_percent)",
        .0.escape_ascii()
    )]
    Unknown(Vec<u8>),
    #[error("\"{0}\" is given twice")]
    Twice(&'static str),
    #[error("max_ejection is shorter than base_ejection")]
    MaxBelowBase,
    #[error("both consecutive_5xx and consecutive_errors are 0: nothing would eject a peer")]
    Nothing,
}

/// Parses `lb_outlier`'s `key=value` parameters (none: the defaults).
pub fn parse(args: &[&[u8]]) -> Result<OutlierConf, OutlierError> {
    let mut c = OutlierConf::default();
    let mut seen = [false; 5];
    for arg in args {
        let Some(eq) = arg.iter().position(|&b| b == b'=') else {
            return Err(NotKeyValue(arg.to_vec()).into());
        };
        let (key, value) = (&arg[..eq], &arg[eq + 1..]);
        let count = |name: &'static [u8], max: u32| -> Result<u32, InvalidValue> {
            crate::conf::number::decimal::<u32>(value)
                .filter(|&n| n <= max)
                .ok_or_else(|| InvalidValue::new(name, value, "expected a number from 0 to 1000"))
        };
        let time = |name: &'static [u8]| -> Result<u64, InvalidValue> {
            parse_time_ms(value).filter(|&ms| ms > 0).ok_or_else(|| {
                InvalidValue::new(name, value, "expected a positive time such as 30s")
            })
        };
        let (i, name) = match key {
            b"consecutive_5xx" => {
                c.consecutive_5xx = count(b"consecutive_5xx", 1000)?;
                (0, "consecutive_5xx")
            }
            b"consecutive_errors" => {
                c.consecutive_errors = count(b"consecutive_errors", 1000)?;
                (1, "consecutive_errors")
            }
            b"base_ejection" => {
                c.base_ejection_ms = time(b"base_ejection")?;
                (2, "base_ejection")
            }
            b"max_ejection" => {
                c.max_ejection_ms = time(b"max_ejection")?;
                (3, "max_ejection")
            }
            b"max_percent" => {
                let v = value.strip_suffix(b"%").unwrap_or(value);
                c.max_percent = crate::conf::number::decimal::<u32>(v)
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| {
                        InvalidValue::new(
                            b"max_percent",
                            value,
                            "expected a percentage from 1 to 100",
                        )
                    })?;
                (4, "max_percent")
            }
            other => return Err(OutlierError::Unknown(other.to_vec())),
        };
        if seen[i] {
            return Err(OutlierError::Twice(name));
        }
        seen[i] = true;
    }
    if c.max_ejection_ms < c.base_ejection_ms {
        return Err(OutlierError::MaxBelowBase);
    }
    if c.consecutive_5xx == 0 && c.consecutive_errors == 0 {
        return Err(OutlierError::Nothing);
    }
    Ok(c)
}

impl OutlierConf {
    /// How long the `n`-th ejection (1 for the first) lasts.
    pub fn ejection_ms(&self, n: u64) -> u64 {
        self.base_ejection_ms
            .saturating_mul(n.max(1))
            .min(self.max_ejection_ms)
    }

    /// Whether one more of `peers` may be ejected while `ejected` are. At least one peer may
    /// always be ejected from an upstream of two or more (Envoy ejects one below 100%/n too).
    pub fn may_eject(&self, ejected: usize, peers: usize) -> bool {
        if peers < 2 {
            return false;
        }
        let allowed = (peers as u64 * u64::from(self.max_percent) / 100).max(1);
        (ejected as u64) < allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<OutlierConf, OutlierError> {
        let args: Vec<&[u8]> = s.split_whitespace().map(str::as_bytes).collect();
        parse(&args)
    }

    #[test]
    fn parses() {
        assert_eq!(p(""), Ok(OutlierConf::default()));
        let c = p("consecutive_5xx=3 consecutive_errors=0 base_ejection=1s max_ejection=5m max_percent=50")
            .unwrap();
        assert_eq!(
            c,
            OutlierConf {
                consecutive_5xx: 3,
                consecutive_errors: 0,
                base_ejection_ms: 1000,
                max_ejection_ms: 300_000,
                max_percent: 50
            }
        );
        assert_eq!(p("max_percent=50%").unwrap().max_percent, 50);
    }

    #[test]
    fn errors() {
        let text = |s: &str| p(s).unwrap_err().to_string();
        assert_eq!(
            text("consecutive_5xx=x"),
            "invalid value \"x\" for \"consecutive_5xx\": expected a number from 0 to 1000"
        );
        assert_eq!(
            text("colour=red"),
            "unknown parameter \"colour\" (expected consecutive_5xx, consecutive_errors, \
             base_ejection, max_ejection or max_percent)"
        );
        assert_eq!(
            text("max_percent=0"),
            "invalid value \"0\" for \"max_percent\": expected a percentage from 1 to 100"
        );
        assert_eq!(
            text("max_percent=150"),
            "invalid value \"150\" for \"max_percent\": expected a percentage from 1 to 100"
        );
        assert_eq!(
            text("base_ejection=0"),
            "invalid value \"0\" for \"base_ejection\": expected a positive time such as 30s"
        );
        assert_eq!(
            text("base_ejection=1m max_ejection=30s"),
            "max_ejection is shorter than base_ejection"
        );
        assert_eq!(
            text("consecutive_5xx=1 consecutive_5xx=2"),
            "\"consecutive_5xx\" is given twice"
        );
        assert_eq!(
            text("consecutive_5xx=0 consecutive_errors=0"),
            "both consecutive_5xx and consecutive_errors are 0: nothing would eject a peer"
        );
        assert!(matches!(p("word"), Err(OutlierError::NotKeyValue(_))));
    }

    #[test]
    fn backoff_and_limit() {
        let c = p("base_ejection=30s max_ejection=100s max_percent=50").unwrap();
        assert_eq!(c.ejection_ms(1), 30_000);
        assert_eq!(c.ejection_ms(2), 60_000);
        assert_eq!(c.ejection_ms(3), 90_000);
        assert_eq!(c.ejection_ms(4), 100_000);
        assert!(c.may_eject(0, 4) && c.may_eject(1, 4) && !c.may_eject(2, 4));
        assert!(!c.may_eject(0, 1));
        let ten = OutlierConf::default();
        assert!(ten.may_eject(0, 3) && !ten.may_eject(1, 3));
        assert!(ten.may_eject(1, 20) && !ten.may_eject(2, 20));
    }
}
