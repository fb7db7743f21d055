//! Times as nginx's `ngx_parse_time(line, 0)` reads them (the parser behind every `*_timeout`
//! directive, e.g. `proxy_read_timeout`): the same strings accepted, with the same value in
//! milliseconds.
//!
//! The rules, as nginx 1.28 applies them:
//! - numbers followed by units, largest unit first, each unit at most once: `w` (weeks), `d`,
//!   `h`, `m`, `s`, `ms` — e.g. `1m30s`, `1h 30m` (spaces may follow a unit), `2s500ms`;
//! - a number without a unit counts in **seconds** (`10` is ten seconds), also at the end
//!   (`1m30` is 90 s) or before a space (`1 2` is 3 s);
//! - `y` and `M` (years, months) are refused in millisecond times;
//! - at least one digit somewhere; a unit without a number counts as zero (`s1` is 1 s);
//! - the total, and every step towards it, must fit in a signed 64-bit integer.

/// The largest time nginx accepts (its `NGX_MAX_INT_T_VALUE` on 64-bit systems), in ms.
pub const MAX_MS: u64 = i64::MAX as u64;

/// Where a unit stands in the order of units: a unit may only follow units of a lower rank.
/// (nginx's steps; "month" is where millisecond times start, so years and months never fit.)
const START: u8 = 2;
const SECOND: u8 = 7;
const AFTER_SPACE: u8 = 9;

/// `text` in milliseconds, or `None` where nginx would say "invalid value".
pub fn parse_time_ms(text: &[u8]) -> Option<u64> {
    let mut rank = START;
    let mut total: u64 = 0;
    // The number being read, and whether any digit has been seen at all.
    let mut number: u64 = 0;
    let mut digits = false;
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        i += 1;
        if c.is_ascii_digit() {
            number = number
                .checked_mul(10)?
                .checked_add(u64::from(c - b'0'))
                .filter(|&n| n <= MAX_MS)?;
            digits = true;
            continue;
        }
        // (rank of this unit, the rank from which it may no longer come, its length in ms)
        let (new_rank, too_late, unit_ms) = match c {
            b'w' => (3, 3, 7 * 24 * 3_600_000),
            b'd' => (4, 4, 24 * 3_600_000),
            b'h' => (5, 5, 3_600_000),
            b'm' if text.get(i) == Some(&b's') => {
                i += 1;
                (8, 8, 1)
            }
            b'm' => (6, 6, 60_000),
            b's' => (SECOND, SECOND, 1000),
            // A bare number ended by a space: seconds; only before any seconds were given.
            b' ' => (AFTER_SPACE, SECOND, 1000),
            _ => return None,
        };
        if rank >= too_late {
            return None;
        }
        rank = new_rank;
        total = add(total, number, unit_ms)?;
        number = 0;
        while text.get(i) == Some(&b' ') {
            i += 1;
        }
    }
    if !digits {
        return None;
    }
    // A trailing number without a unit: seconds.
    add(total, number, 1000)
}

/// `total + number × unit_ms`, within `MAX_MS`.
fn add(total: u64, number: u64, unit_ms: u64) -> Option<u64> {
    if number > MAX_MS / unit_ms {
        return None;
    }
    total.checked_add(number * unit_ms).filter(|&t| t <= MAX_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What nginx 1.28's `ngx_parse_time(s, 0)` returns for each string (`None`: NGX_ERROR),
    /// worked out from its source; t/046-time-syntax.t checks acceptance against nginx itself.
    const CASES: &[(&str, Option<u64>)] = &[
        ("500ms", Some(500)),
        ("2s", Some(2000)),
        ("1m", Some(60_000)),
        ("1h", Some(3_600_000)),
        ("1d", Some(86_400_000)),
        ("1w", Some(604_800_000)),
        ("1m30s", Some(90_000)),
        ("1h30m", Some(5_400_000)),
        ("1h 30m", Some(5_400_000)),
        ("1h  30m 10s", Some(5_410_000)),
        ("2s500ms", Some(2500)),
        ("1s 500ms", Some(1500)),
        ("1w2d3h4m5s6ms", Some(788_645_006)),
        // A bare number is seconds, not milliseconds.
        ("10", Some(10_000)),
        ("0", Some(0)),
        ("0ms", Some(0)),
        ("007s", Some(7000)),
        ("1m30", Some(90_000)),
        ("1ms5", Some(5001)),
        ("1 2", Some(3000)),
        ("1  2", Some(3000)),
        (" 1", Some(1000)),
        ("1 ", Some(1000)),
        ("1s ", Some(1000)),
        // A unit without a number is zero; one digit anywhere suffices.
        ("s1", Some(1000)),
        ("1hm", Some(3_600_000)),
        ("1sms", Some(1000)),
        // Refused: nothing, no digit, years/months, units out of order or repeated,
        // anything else.
        ("", None),
        ("ms", None),
        ("s", None),
        (" ", None),
        ("h m", None),
        ("1y", None),
        ("1M", None),
        ("1s1m", None),
        ("1m1h", None),
        ("1ms1s", None),
        ("1s1s", None),
        ("1m1m", None),
        ("30 s", None),
        ("1 2 3", None),
        ("1s5 6", None),
        ("1 1m", None),
        ("1.5s", None),
        ("-1s", None),
        ("+1s", None),
        ("2x", None),
        ("1S", None),
        ("1H", None),
        ("1sec", None),
        ("1\t", None),
        ("1min", None),
        // Limits: 2^63 - 1 ms in total.
        ("9223372036854775807ms", Some(MAX_MS)),
        ("9223372036854775808ms", None),
        ("99999999999999999999", None),
        ("9223372036854775s", Some(9_223_372_036_854_775_000)),
        ("9223372036854776s", None),
        ("9223372036854775", Some(9_223_372_036_854_775_000)),
        ("9223372036854776", None),
        ("9223372036854775s807ms", Some(MAX_MS)),
        ("9223372036854775s808ms", None),
        ("15250284452w", Some(15_250_284_452 * 604_800_000)),
        ("15250284453w", None),
        ("106751991167d", Some(106_751_991_167 * 86_400_000)),
        ("106751991168d", None),
    ];

    #[test]
    fn as_nginx_parses_them() {
        for &(text, want) in CASES {
            assert_eq!(parse_time_ms(text.as_bytes()), want, "{text:?}");
        }
    }

    /// Random strings over the alphabet of times never panic, and whatever is accepted is
    /// within the limit and has a digit.
    #[test]
    fn noise() {
        let alphabet = b"0123456789ywdhmsM x";
        let mut rng = 0x1234_5678_9abc_def1u64;
        for _ in 0..200_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 24) as usize;
            let s: Vec<u8> = (0..len)
                .map(|k| alphabet[((rng >> (k * 2 % 60)) as usize + k) % alphabet.len()])
                .collect();
            if let Some(v) = parse_time_ms(&s) {
                assert!(v <= MAX_MS);
                assert!(s.iter().any(u8::is_ascii_digit));
            }
        }
    }
}
