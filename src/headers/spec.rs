//! What an `lb_add_header` line means, checked without nginx: the header name must be an HTTP
//! token, the value must not smuggle CR/LF into the response, and the only flag is `always`.

/// Statuses that get our headers when `always` is not given: the same list as nginx's
/// `add_header`.
pub const DEFAULT_STATUSES: [usize; 10] = [200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

/// A checked `lb_add_header name value [always]` line. The value stays raw: nginx compiles it as
/// a complex value (variables allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSpec<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    pub always: bool,
}

/// What is wrong with an `lb_add_header` line: names the bad argument and says what is wrong
/// with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not two or three arguments (nginx's `NGX_CONF_TAKE23` already refuses that).
    #[error(
        "takes a name, a value and an optional \"always\", got {0} argument{plural}",
        plural = if *.0 == 1 { "" } else { "s" }
    )]
    ArgumentCount(usize),
    #[error("empty header name")]
    EmptyName,
    /// `byte` of `name` is not a token character.
    #[error(
        "invalid header name \"{}\": {} is not allowed in an HTTP token",
        show(name),
        describe_byte(*byte)
    )]
    BadName { name: Vec<u8>, byte: u8 },
    /// `byte` (CR, LF or NUL) of `value` would end the header line.
    #[error(
        "invalid value \"{}\" for header \"{}\": {} is not allowed in a header value",
        show(value),
        show(name),
        describe_byte(*byte)
    )]
    BadValue {
        name: Vec<u8>,
        value: Vec<u8>,
        byte: u8,
    },
    #[error(
        "invalid parameter \"{}\": the only flag is \"always\"",
        show(.0)
    )]
    BadFlag(Vec<u8>),
}

/// Parses the directive's arguments (without the directive name).
pub fn parse_add_header<'a>(args: &[&'a [u8]]) -> Result<HeaderSpec<'a>, HeaderError> {
    let (name, value, flag) = match args {
        [name, value] => (*name, *value, None),
        [name, value, flag] => (*name, *value, Some(*flag)),
        _ => return Err(HeaderError::ArgumentCount(args.len())),
    };
    if name.is_empty() {
        return Err(HeaderError::EmptyName);
    }
    if let Some(&byte) = name.iter().find(|b| !is_token_char(**b)) {
        return Err(HeaderError::BadName {
            name: name.to_vec(),
            byte,
        });
    }
    if let Some(&byte) = value.iter().find(|b| is_forbidden_in_value(**b)) {
        return Err(HeaderError::BadValue {
            name: name.to_vec(),
            value: value.to_vec(),
            byte,
        });
    }
    let always = match flag {
        None => false,
        Some(b"always") => true,
        Some(other) => return Err(HeaderError::BadFlag(other.to_vec())),
    };
    Ok(HeaderSpec {
        name,
        value,
        always,
    })
}

/// Whether a header is added for this response status.
pub fn applies_to_status(always: bool, status: usize) -> bool {
    always || DEFAULT_STATUSES.contains(&status)
}

/// A runtime value (after variables were evaluated) that must not be sent: it would end the
/// header line early and let the rest be read as headers or body.
pub fn unsafe_runtime_value(value: &[u8]) -> bool {
    value.iter().any(|b| is_forbidden_in_value(*b))
}

/// RFC 9110 `tchar`.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_forbidden_in_value(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | 0)
}

fn describe_byte(b: u8) -> String {
    match b {
        b'\r' => "CR".into(),
        b'\n' => "LF".into(),
        0 => "NUL".into(),
        b' ' => "a space".into(),
        b'\t' => "a tab".into(),
        0x21..=0x7e => format!("'{}'", b as char),
        _ => format!("byte 0x{b:02x}"),
    }
}

/// Bytes for an error message: printable ASCII as is, the rest escaped.
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<HeaderSpec<'static>, HeaderError> {
        let owned: Vec<&'static [u8]> = args
            .iter()
            .map(|a| &*Box::leak(a.as_bytes().to_vec().into_boxed_slice()))
            .collect();
        parse_add_header(&owned)
    }

    #[test]
    fn plain_and_always() {
        let h = parse(&["X-Served-By", "$upstream_addr"]).unwrap();
        assert_eq!(h.name, b"X-Served-By");
        assert_eq!(h.value, b"$upstream_addr");
        assert!(!h.always);
        assert!(parse(&["X-A", "b", "always"]).unwrap().always);
    }

    #[test]
    fn bad_names() {
        for name in ["X Bad", "X:Y", "", "X\r\nY", "Ü"] {
            let err = parse(&[name, "v"]).unwrap_err().to_string();
            assert!(err.contains("header name"), "{name:?}: {err}");
        }
        let bad = |name: &str, byte| HeaderError::BadName {
            name: name.as_bytes().to_vec(),
            byte,
        };
        assert_eq!(parse(&["X Bad", "v"]), Err(bad("X Bad", b' ')));
        assert_eq!(parse(&["Ü", "v"]), Err(bad("Ü", 0xc3)));
        assert_eq!(parse(&["", "v"]), Err(HeaderError::EmptyName));
        // The texts nginx prints after "lb_add_header: " (t/010 asserts them).
        let text = |name: &str| parse(&[name, "v"]).unwrap_err().to_string();
        assert_eq!(
            text("X Bad"),
            "invalid header name \"X Bad\": a space is not allowed in an HTTP token"
        );
        assert_eq!(
            text("X:"),
            "invalid header name \"X:\": ':' is not allowed in an HTTP token"
        );
        assert_eq!(
            text("Ü"),
            "invalid header name \"\\xc3\\x9c\": byte 0xc3 is not allowed in an HTTP token"
        );
        assert_eq!(text(""), "empty header name");
    }

    #[test]
    fn bad_values_and_flags() {
        let err = parse(&["X-A", "a\r\nSet-Cookie: x"]).unwrap_err();
        assert_eq!(
            err,
            HeaderError::BadValue {
                name: b"X-A".to_vec(),
                value: b"a\r\nSet-Cookie: x".to_vec(),
                byte: b'\r'
            }
        );
        assert_eq!(
            err.to_string(),
            "invalid value \"a\\r\\nSet-Cookie: x\" for header \"X-A\": CR is not allowed in a \
             header value"
        );
        assert!(parse(&["X-A", "a\nb"])
            .unwrap_err()
            .to_string()
            .contains("LF is not allowed"));
        let err = parse(&["X-A", "b", "sometimes"]).unwrap_err();
        assert_eq!(err, HeaderError::BadFlag(b"sometimes".to_vec()));
        assert_eq!(
            err.to_string(),
            "invalid parameter \"sometimes\": the only flag is \"always\""
        );
        assert_eq!(
            parse(&["X-A"]).unwrap_err().to_string(),
            "takes a name, a value and an optional \"always\", got 1 argument"
        );
        assert_eq!(
            parse(&["X-A", "b", "always", "x"]).unwrap_err().to_string(),
            "takes a name, a value and an optional \"always\", got 4 arguments"
        );
    }

    #[test]
    fn empty_value_is_allowed_in_config() {
        // It simply adds no header at run time.
        assert!(parse(&["X-A", ""]).is_ok());
    }

    #[test]
    fn status_rules() {
        for s in DEFAULT_STATUSES {
            assert!(applies_to_status(false, s));
        }
        for s in [100, 202, 203, 300, 305, 400, 404, 500, 502, 504] {
            assert!(!applies_to_status(false, s), "{s}");
            assert!(applies_to_status(true, s));
        }
    }

    #[test]
    fn runtime_values() {
        assert!(unsafe_runtime_value(b"a\rb"));
        assert!(unsafe_runtime_value(b"a\nb"));
        assert!(unsafe_runtime_value(b"a\0b"));
        assert!(!unsafe_runtime_value(b"127.0.0.1:8080, 127.0.0.1:8081"));
    }
}
