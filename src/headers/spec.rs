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

/// Parses the directive's arguments (without the directive name). The error names the bad
/// argument and says what is wrong with it.
pub fn parse_add_header<'a>(args: &[&'a [u8]]) -> Result<HeaderSpec<'a>, String> {
    let (name, value, flag) = match args {
        [name, value] => (*name, *value, None),
        [name, value, flag] => (*name, *value, Some(*flag)),
        _ => {
            return Err(format!(
                "takes a name, a value and an optional \"always\", got {} arguments",
                args.len()
            ))
        }
    };
    if name.is_empty() {
        return Err("empty header name".to_string());
    }
    if let Some(bad) = name.iter().find(|b| !is_token_char(**b)) {
        return Err(format!(
            "invalid header name \"{}\": {} is not allowed in an HTTP token",
            show(name),
            describe_byte(*bad)
        ));
    }
    if let Some(bad) = value.iter().find(|b| is_forbidden_in_value(**b)) {
        return Err(format!(
            "invalid value \"{}\" for header \"{}\": {} is not allowed in a header value",
            show(value),
            show(name),
            describe_byte(*bad)
        ));
    }
    let always = match flag {
        None => false,
        Some(b"always") => true,
        Some(other) => {
            return Err(format!(
                "invalid parameter \"{}\": the only flag is \"always\"",
                show(other)
            ))
        }
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

    fn parse(args: &[&str]) -> Result<HeaderSpec<'static>, String> {
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
            let err = parse(&[name, "v"]).unwrap_err();
            assert!(err.contains("header name"), "{name:?}: {err}");
        }
        assert!(parse(&["X Bad", "v"]).unwrap_err().contains("a space"));
    }

    #[test]
    fn bad_values_and_flags() {
        let err = parse(&["X-A", "a\r\nSet-Cookie: x"]).unwrap_err();
        assert!(err.contains("CR"), "{err}");
        assert!(err.contains("a\\r\\nSet-Cookie: x"), "{err}");
        assert!(parse(&["X-A", "a\nb"]).unwrap_err().contains("LF"));
        let err = parse(&["X-A", "b", "sometimes"]).unwrap_err();
        assert!(err.contains("\"sometimes\""), "{err}");
        assert!(parse(&["X-A"]).unwrap_err().contains("1 arguments"));
        assert!(parse(&["X-A", "b", "always", "x"]).is_err());
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
