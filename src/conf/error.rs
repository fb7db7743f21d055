//! Error pieces that more than one directive's parser reports, each message written once.
//! The values are kept as the bytes nginx passed; they are escaped only when shown.

/// `key=value` with a value the key does not take: `invalid value "V" for "K": EXPECTED`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value \"{}\" for \"{}\": {expected}", value.escape_ascii(), key.escape_ascii())]
pub struct InvalidValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// What the key takes, e.g. "expected a positive time such as 10s".
    pub expected: &'static str,
}

impl InvalidValue {
    pub fn new(key: &[u8], value: &[u8], expected: &'static str) -> Self {
        InvalidValue {
            key: key.to_vec(),
            value: value.to_vec(),
            expected,
        }
    }
}

/// A parameter without `=` where only `key=value` parameters are taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid parameter \"{}\": expected key=value", .0.escape_ascii())]
pub struct NotKeyValue(pub Vec<u8>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            InvalidValue::new(b"rise", b"0\r", "expected a positive integer").to_string(),
            "invalid value \"0\\r\" for \"rise\": expected a positive integer"
        );
        assert_eq!(
            NotKeyValue(b"word".to_vec()).to_string(),
            "invalid parameter \"word\": expected key=value"
        );
    }
}
