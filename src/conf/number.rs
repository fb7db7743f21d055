//! Numbers in directive values as nginx's `ngx_atoi` reads them: decimal digits only. Rust's
//! `str::parse` also takes a leading `+` (`rise=+2`), which nginx's own directives refuse.

/// `text` as a number of type `T` when it is one or more ASCII digits and fits; `None`
/// otherwise (empty, a sign, a space, anything else, or too large).
pub fn decimal<T: core::str::FromStr>(text: &[u8]) -> Option<T> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    core::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_only_as_ngx_atoi() {
        assert_eq!(decimal::<u32>(b"0"), Some(0));
        assert_eq!(decimal::<u32>(b"007"), Some(7));
        assert_eq!(decimal::<u16>(b"65535"), Some(65535));
        assert_eq!(decimal::<u16>(b"65536"), None);
        for bad in [
            &b""[..],
            b"+5",
            b"-5",
            b" 5",
            b"5 ",
            b"5s",
            b"0x10",
            b"1_000",
            b"\xff",
        ] {
            assert_eq!(decimal::<u64>(bad), None, "{}", bad.escape_ascii());
        }
    }
}
