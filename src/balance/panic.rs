//! `lb_panic N%`: when fewer than N% of an upstream's primary peers are available (health
//! checks, passive failures), requests go to every primary peer that is not `down` as if all
//! were healthy, instead of crushing the few that are left (Envoy's panic threshold).

/// How often each worker counts the available peers of an upstream with `lb_panic`, ms: the
/// count is O(peers), so it is not taken for every request.
pub const EVALUATE_EVERY_MS: u64 = 100;

/// Parses `N%` (1 to 100).
pub fn parse_percent(arg: &[u8]) -> Option<u32> {
    let digits = arg.strip_suffix(b"%")?;
    if digits.len() > 3 {
        return None;
    }
    let n: u32 = crate::conf::number::decimal(digits)?;
    (1..=100).contains(&n).then_some(n)
}

/// Whether an upstream with `available` of `eligible` primary peers available is in panic
/// with threshold `percent`. No eligible peer: nothing to spread over, no panic.
pub fn in_panic(available: usize, eligible: usize, percent: u32) -> bool {
    eligible > 0 && (available as u128) * 100 < u128::from(percent) * eligible as u128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percents() {
        assert_eq!(parse_percent(b"50%"), Some(50));
        assert_eq!(parse_percent(b"1%"), Some(1));
        assert_eq!(parse_percent(b"100%"), Some(100));
        for bad in [
            &b"0%"[..],
            b"150%",
            b"50",
            b"%",
            b"-5%",
            b"5.5%",
            b"0050%",
            b" 5%",
            b"x%",
        ] {
            assert_eq!(parse_percent(bad), None, "{}", bad.escape_ascii());
        }
    }

    #[test]
    fn threshold() {
        // 50%: 1 of 4 is under, 2 of 4 is not.
        assert!(in_panic(1, 4, 50));
        assert!(!in_panic(2, 4, 50));
        assert!(in_panic(0, 1, 1));
        assert!(!in_panic(1, 1, 100));
        assert!(in_panic(99, 100, 100));
        assert!(!in_panic(0, 0, 50));
    }
}
