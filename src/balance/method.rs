//! The argument of `lb_upstream`: which balancing method an upstream uses.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Smooth weighted round-robin, nginx's own order.
    #[default]
    RoundRobin,
}

impl Method {
    pub const NAMES: &'static [&'static str] = &["round_robin"];

    /// Parses the optional argument of `lb_upstream`.
    pub fn parse(arg: Option<&[u8]>) -> Result<Method, String> {
        match arg {
            None | Some(b"round_robin") => Ok(Method::RoundRobin),
            Some(other) => Err(format!(
                "unknown balancing method \"{}\" (expected one of: {})",
                other.escape_ascii(),
                Self::NAMES.join(", ")
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::RoundRobin => "round_robin",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(Method::parse(None), Ok(Method::RoundRobin));
        assert_eq!(Method::parse(Some(b"round_robin")), Ok(Method::RoundRobin));
        let err = Method::parse(Some(b"fastest")).unwrap_err();
        assert!(err.contains("\"fastest\""), "{err}");
        assert_eq!(Method::RoundRobin.name(), "round_robin");
    }
}
