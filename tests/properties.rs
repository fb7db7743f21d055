//! Property tests of the pure core: every parser of outside input (probe responses, status
//! queries, `lb_api` bodies and paths, the `lb_state` file, directive arguments) and the
//! balancing invariants, each checked against a small reference model or a round trip.
//!
//! CI mode (`cargo test --release --no-default-features`, a step of
//! `scripts/test.sh`): a fixed seed and a modest number of cases per property, so the run is
//! deterministic and takes a few seconds.
//!
//! Only without the `nginx` feature: with it the library carries the nginx shell, whose
//! references to nginx's own symbols cannot be linked into a test program (the benches are
//! run with `--no-default-features` for the same reason). Under the default features this
//! file compiles to nothing, so a plain `cargo test --release` still passes.
//!
//! Long mode, by hand, through proptest's own environment variables:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release --no-default-features --test properties
//! PROPTEST_CASES=20000 PROPTEST_RNG_SEED=$RANDOM$RANDOM cargo test --release \
//!     --no-default-features --test properties
//! ```
//!
//! - `PROPTEST_CASES=N`: N cases for each property (the few heavy ones, marked `heavy`, take
//!   N / 100).
//! - `PROPTEST_RNG_SEED=N`: another fixed seed (note it to replay a failure);
//!   `PROPTEST_RNG_SEED=random` draws one (proptest then warns that "random" is not a number,
//!   and keeps its random default).
//!
//! A failure prints the shrunk input. Nothing is written to disk (no `proptest-regressions/`):
//! turn a failure worth keeping into a plain unit test next to the code.
//!
//! Existing randomized unit tests in `src/` (noise on the time parser and probe responses,
//! the smooth WRR window with a static usable set, the walk against nginx with failures, random
//! `lb_check` lines) are complemented, not repeated: here the models are independent (nginx's
//! own `ngx_parse_time` transliterated, a generator of well-formed responses that knows the
//! answer, request bodies built from their fields), inputs are split in arbitrary chunks rather
//! than byte by byte, and the balancers are driven through `Selector`, their public face.

#![cfg(not(feature = "nginx"))]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};

use ngx_http_lb_module::api::{self, state, Admin, ApiError, Op, PeerPatch};
use ngx_http_lb_module::balance::{
    availability, least_conn::Fit, method, outlier, p2c, panic, Method, MethodConf, Selector,
    SmoothWrr, Verdict,
};
use ngx_http_lb_module::conf::time::{parse_time_ms, MAX_MS};
use ngx_http_lb_module::headers::spec::{parse_add_header, HeaderError};
use ngx_http_lb_module::health::config::{parse_check, CheckConf, CheckError, HttpMethod, Kind};
use ngx_http_lb_module::health::response::{parse, Parser, Progress, ResponseError};
use ngx_http_lb_module::keepalive::{self, KeepaliveConf, KeepaliveError};
use ngx_http_lb_module::status::{html, json, prometheus, query};

// ---------------------------------------------------------------------------------------------
// Configuration: a fixed seed unless PROPTEST_RNG_SEED says otherwise.

/// The seed of CI runs ("lb props").
const CI_SEED: u64 = 0x6c62_2070_726f_7073;

fn cases_from_env() -> Option<u32> {
    std::env::var("PROPTEST_CASES").ok()?.parse().ok()
}

/// `ci_cases` cases (or `PROPTEST_CASES / divisor`), the fixed seed unless one is given.
fn scaled(ci_cases: u32, divisor: u32) -> ProptestConfig {
    // The default reads the PROPTEST_* variables (PROPTEST_RNG_SEED among them).
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: cases_from_env().map_or(ci_cases, |n| (n / divisor).max(1)),
        rng_seed: match std::env::var_os("PROPTEST_RNG_SEED") {
            None => RngSeed::Fixed(CI_SEED),
            Some(_) => default.rng_seed,
        },
        failure_persistence: None,
        ..default
    }
}

fn config(ci_cases: u32) -> ProptestConfig {
    scaled(ci_cases, 1)
}

/// Properties whose every case builds large peer lists.
fn heavy(ci_cases: u32) -> ProptestConfig {
    scaled(ci_cases, 100)
}

// ---------------------------------------------------------------------------------------------
// Reference models shared by several properties.

/// nginx 1.28's `ngx_parse_time(line, 0)` (src/core/ngx_parse.c), transliterated step by step
/// with the same signed 64-bit arithmetic: the reference for every time argument.
fn nginx_parse_time_ms(line: &[u8]) -> Option<u64> {
    #[derive(Clone, Copy, PartialEq, PartialOrd)]
    enum Step {
        Start,
        Year,
        Month,
        Week,
        Day,
        Hour,
        Min,
        Sec,
        Msec,
        Last,
    }
    const MAX: i64 = i64::MAX;
    let (cutoff, cutlim) = (MAX / 10, MAX % 10);
    let (mut valid, mut value, mut total) = (false, 0i64, 0i64);
    let mut step = Step::Month; // is_sec = 0
    let mut p = 0;
    let last = line.len();
    while p < last {
        let c = line[p];
        if c.is_ascii_digit() {
            let d = i64::from(c - b'0');
            if value >= cutoff && (value > cutoff || d > cutlim) {
                return None;
            }
            value = value * 10 + d;
            p += 1;
            valid = true;
            continue;
        }
        p += 1;
        let (mut max, mut scale);
        match c {
            b'y' => {
                if step > Step::Start {
                    return None;
                }
                step = Step::Year;
                max = MAX / (60 * 60 * 24 * 365);
                scale = 60 * 60 * 24 * 365;
            }
            b'M' => {
                if step >= Step::Month {
                    return None;
                }
                step = Step::Month;
                max = MAX / (60 * 60 * 24 * 30);
                scale = 60 * 60 * 24 * 30;
            }
            b'w' => {
                if step >= Step::Week {
                    return None;
                }
                step = Step::Week;
                max = MAX / (60 * 60 * 24 * 7);
                scale = 60 * 60 * 24 * 7;
            }
            b'd' => {
                if step >= Step::Day {
                    return None;
                }
                step = Step::Day;
                max = MAX / (60 * 60 * 24);
                scale = 60 * 60 * 24;
            }
            b'h' => {
                if step >= Step::Hour {
                    return None;
                }
                step = Step::Hour;
                max = MAX / (60 * 60);
                scale = 60 * 60;
            }
            b'm' => {
                if p < last && line[p] == b's' {
                    if step >= Step::Msec {
                        return None;
                    }
                    p += 1;
                    step = Step::Msec;
                    max = MAX;
                    scale = 1;
                } else {
                    if step >= Step::Min {
                        return None;
                    }
                    step = Step::Min;
                    max = MAX / 60;
                    scale = 60;
                }
            }
            b's' => {
                if step >= Step::Sec {
                    return None;
                }
                step = Step::Sec;
                max = MAX;
                scale = 1;
            }
            b' ' => {
                if step >= Step::Sec {
                    return None;
                }
                step = Step::Last;
                max = MAX;
                scale = 1;
            }
            _ => return None,
        }
        if step != Step::Msec {
            scale *= 1000;
            max /= 1000;
        }
        if value > max {
            return None;
        }
        value *= scale;
        if total > MAX - value {
            return None;
        }
        total += value;
        value = 0;
        while p < last && line[p] == b' ' {
            p += 1;
        }
    }
    if !valid {
        return None;
    }
    if value > MAX / 1000 {
        return None;
    }
    value *= 1000;
    if total > MAX - value {
        return None;
    }
    Some((total + value) as u64)
}

/// Digits only, as nginx's `ngx_atoi` takes them (Rust's `str::parse` would also take a
/// leading `+`): every numeric directive value (`conf::number`).
fn strict_uint(s: &[u8]) -> Option<u128> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u128, |n, &d| {
        n.checked_mul(10)?.checked_add(u128::from(d - b'0'))
    })
}

/// splitmix64 of `seed` and `i`: per-peer pseudo-random bits.
fn mix(seed: u64, i: usize) -> u64 {
    let mut z = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A usable set drawn from `(seed, density)`: peer `i` is in with probability density/256.
fn in_mask(mask: (u64, u32), i: usize) -> bool {
    (mix(mask.0, i) & 0xff) < u64::from(mask.1)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A time in nginx's syntax, largest unit first: `1w2d3h4m5s6ms`, or spaced `1h 30m`.
fn render_time(ms: u64, spaced: bool) -> String {
    let units = [
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let mut rest = ms;
    let mut parts = Vec::new();
    for (unit, len) in units {
        if rest / len > 0 {
            parts.push(format!("{}{unit}", rest / len));
        }
        rest %= len;
    }
    if parts.is_empty() {
        "0ms".into()
    } else {
        parts.join(if spaced { " " } else { "" })
    }
}

/// Four spellings of the same time: canonical, canonical with spaces, all milliseconds, and
/// bare seconds (or `Ns` + `Mms`).
fn spell_time(ms: u64, form: u8) -> String {
    match form % 4 {
        0 => render_time(ms, false),
        1 => render_time(ms, true),
        2 => format!("{ms}ms"),
        _ if ms % 1000 == 0 => format!("{}", ms / 1000),
        _ => format!("{}s{}ms", ms / 1000, ms % 1000),
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies shared by the directive parsers.

/// Texts that look like times, and some that are close but wrong.
fn time_text() -> impl Strategy<Value = Vec<u8>> {
    let unit = prop::sample::select(vec!["w", "d", "h", "m", "s", "ms", "", " ", "y", "M", "x"]);
    let number = prop_oneof![
        (0u64..2000).prop_map(|n| n.to_string()),
        Just(String::new()),
        "0{1,3}[0-9]{1,2}",
        // Around the limits of each unit.
        (
            prop::sample::select(vec![1u64, 1000, 60_000, 3_600_000, 86_400_000, 604_800_000]),
            -2i64..=2
        )
            .prop_map(|(unit, d)| (((MAX_MS / unit) as i64).saturating_add(d)).to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
    ];
    prop_oneof![
        4 => vec((number, unit, " {0,2}"), 0..5).prop_map(|parts| {
            parts
                .into_iter()
                .flat_map(|(n, u, sp)| [n, u.to_string(), sp])
                .collect::<String>()
                .into_bytes()
        }),
        2 => vec(prop::sample::select(b"0123456789ywdhmsM x".to_vec()), 0..16),
        1 => vec(any::<u8>(), 0..12),
        1 => (0..=MAX_MS, any::<u8>()).prop_map(|(ms, f)| spell_time(ms, f).into_bytes()),
    ]
}

/// Numbers as directive arguments: in and out of range, signed, padded, not numbers.
fn number_text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (0u64..2000).prop_map(|n| n.to_string().into_bytes()),
        2 => (0u64..200_000).prop_map(|n| n.to_string().into_bytes()),
        1 => any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        1 => (0u32..100).prop_map(|n| format!("+{n}").into_bytes()),
        1 => (0u32..100).prop_map(|n| format!("00{n}").into_bytes()),
        1 => prop::sample::select(vec!["", "-1", "-0", "+", "x", "1e3", " 1", "1 ", "1.0", "0x10"])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => "[0-9+-]{1,25}".prop_map(String::into_bytes),
    ]
}

/// Arbitrary argument lists for the never-panic properties: known keys with junk, junk bytes.
fn junk_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let key = prop::sample::select(vec![
        "type=",
        "interval=",
        "timeout=",
        "jitter=",
        "rise=",
        "fall=",
        "uri=",
        "host=",
        "status=",
        "body=~",
        "port=",
        "decay=",
        "max_resolved=",
        "max_added=",
        "requests=",
        "time=",
        "consecutive_5xx=",
        "max_percent=",
        "base_ejection=",
        "",
    ]);
    vec(
        prop_oneof![
            (key, vec(any::<u8>(), 0..12)).prop_map(|(k, v)| [k.as_bytes(), &v].concat()),
            vec(any::<u8>(), 0..16),
        ],
        0..6,
    )
}

fn refs(args: &[Vec<u8>]) -> Vec<&[u8]> {
    args.iter().map(Vec::as_slice).collect()
}

// ---------------------------------------------------------------------------------------------
// conf::time: nginx's time syntax.

proptest! {
    #![proptest_config(config(8192))]

    /// Every text gets the answer nginx's own `ngx_parse_time` gives (value or refusal).
    #[test]
    fn time_parses_as_nginx_does(text in time_text()) {
        prop_assert_eq!(parse_time_ms(&text), nginx_parse_time_ms(&text), "{:?}", text.escape_ascii().to_string());
    }

    /// Any time up to the limit, written in any of its spellings, reads back as itself.
    #[test]
    fn time_round_trips(ms in prop_oneof![0..=MAX_MS, 0u64..10_000_000], form in any::<u8>()) {
        let text = spell_time(ms, form);
        prop_assert_eq!(parse_time_ms(text.as_bytes()), Some(ms), "{}", text);
    }
}

// ---------------------------------------------------------------------------------------------
// Directive arguments: lb_upstream, lb_keepalive, lb_check, lb_add_header, lb_outlier, lb_panic.

/// A valid `lb_upstream` line's content.
fn upstream_line() -> impl Strategy<Value = MethodConf> {
    (
        prop::option::of(prop::sample::select(vec![
            Method::RoundRobin,
            Method::LeastConn,
            Method::P2c,
        ])),
        prop::option::of(1u64..=1_000_000_000),
        prop::option::of(1usize..=method::MAX_RESOLVED),
        prop::option::of(0usize..=method::MAX_ADDED),
    )
        .prop_map(|(m, decay, max_resolved, max_added)| MethodConf {
            method: m.unwrap_or_default(),
            // decay= applies to p2c only.
            decay_ms: decay
                .filter(|_| m == Some(Method::P2c))
                .unwrap_or(method::DEFAULT_DECAY_MS),
            max_resolved,
            max_added,
        })
}

/// The arguments that say `conf`, in any order and spelling (method word given or implied).
fn upstream_args(conf: MethodConf, explicit: bool, forms: u64) -> Vec<String> {
    let mut args = Vec::new();
    if explicit || conf.method != Method::RoundRobin {
        args.push(conf.method.name().to_string());
    }
    if conf.method == Method::P2c && (conf.decay_ms != method::DEFAULT_DECAY_MS || forms & 1 == 1) {
        args.push(format!(
            "decay={}",
            spell_time(conf.decay_ms, (forms >> 1) as u8)
        ));
    }
    let zeros = if forms & 0x100 != 0 { "00" } else { "" };
    if let Some(n) = conf.max_resolved {
        args.push(format!("max_resolved={zeros}{n}"));
    }
    if let Some(n) = conf.max_added {
        args.push(format!("max_added={zeros}{n}"));
    }
    args
}

/// One argument no `lb_upstream` line takes, whatever else it has.
fn bad_upstream_arg() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_0-9]{1,12}".prop_filter("not a method", |w| !Method::NAMES.contains(&w.as_str())),
        time_text().prop_filter_map("a positive time", |t| {
            match nginx_parse_time_ms(&t) {
                Some(ms) if ms > 0 => None,
                _ => String::from_utf8(t).ok().map(|t| format!("decay={t}")),
            }
        }),
        prop_oneof![Just(0u64), (method::MAX_RESOLVED as u64 + 1)..u64::MAX]
            .prop_map(|n| format!("max_resolved={n}")),
        ((method::MAX_ADDED as u64 + 1)..u64::MAX).prop_map(|n| format!("max_added={n}")),
        prop::sample::select(vec![
            "max_resolved=",
            "max_added=-1",
            "max_resolved=x",
            "max_added= 1",
            "decay=",
            "decay=0",
            "decay=1y",
            "p2c=1",
            "LEAST_CONN",
            "",
        ])
        .prop_map(String::from),
    ]
}

proptest! {
    #![proptest_config(config(4096))]

    /// A line rendered from a configuration, in any order and time spelling, parses back to
    /// the configuration.
    #[test]
    fn upstream_line_round_trips(
        (conf, args) in (upstream_line(), any::<bool>(), any::<u64>())
            .prop_flat_map(|(c, explicit, forms)| {
                (Just(c), Just(upstream_args(c, explicit, forms)).prop_shuffle())
            })
    ) {
        let bytes: Vec<Vec<u8>> = args.iter().map(|a| a.clone().into_bytes()).collect();
        prop_assert_eq!(method::parse(&refs(&bytes)), Ok(conf), "{:?}", args);
    }

    /// One bad argument anywhere in a valid line makes the line an error; so does a second
    /// method, and decay= without p2c.
    #[test]
    fn upstream_line_refuses_any_bad_argument(
        conf in upstream_line(),
        bad in prop_oneof![
            3 => bad_upstream_arg(),
            1 => prop::sample::select(Method::NAMES.to_vec()).prop_map(String::from),
            1 => (1u64..100_000).prop_map(|ms| format!("decay={ms}ms")),
        ],
        at in any::<Index>(),
    ) {
        let mut args = upstream_args(conf, true, 0);
        // A method word is bad only as a second one; decay only without p2c.
        let second_method = Method::NAMES.contains(&bad.as_str());
        let valid_decay = bad.starts_with("decay=")
            && nginx_parse_time_ms(&bad.as_bytes()[6..]).is_some_and(|ms| ms > 0);
        args.insert(at.index(args.len() + 1), bad.clone());
        let bytes: Vec<Vec<u8>> = args.iter().map(|a| a.clone().into_bytes()).collect();
        let got = method::parse(&refs(&bytes));
        if valid_decay && conf.method == Method::P2c {
            // Not a bad argument after all: a second decay=, the last one counts.
            prop_assert!(got.is_ok(), "{:?} gave {:?}", args, got);
            return Ok(());
        }
        prop_assert!(got.is_err(), "{:?} gave {:?}", args, got);
        if valid_decay {
            prop_assert_eq!(got, Err(method::MethodError::DecayWithoutP2c));
        } else if second_method {
            prop_assert!(matches!(got, Err(method::MethodError::Unexpected(_))));
        }
    }
}

/// What `lb_keepalive` must answer, from the rules in its documentation.
#[derive(Debug, PartialEq)]
enum KeepaliveModel {
    Ok(KeepaliveConf),
    NoCount,
    BadCount,
    NotKeyValue,
    Invalid(Vec<u8>),
    Unknown(Vec<u8>),
}

fn keepalive_model(args: &[Vec<u8>]) -> KeepaliveModel {
    let Some((first, rest)) = args.split_first() else {
        return KeepaliveModel::NoCount;
    };
    let mut c = KeepaliveConf {
        per_peer: match strict_uint(first) {
            Some(n @ 1..=1024) => n as usize,
            _ => return KeepaliveModel::BadCount,
        },
        timeout_ms: 60_000,
        requests: 1000,
        time_ms: 3_600_000,
    };
    for arg in rest {
        let Some(eq) = arg.iter().position(|&b| b == b'=') else {
            return KeepaliveModel::NotKeyValue;
        };
        let (k, v) = (&arg[..eq], &arg[eq + 1..]);
        match k {
            b"timeout" | b"time" => match nginx_parse_time_ms(v) {
                Some(ms) if ms > 0 && k == b"timeout" => c.timeout_ms = ms,
                Some(ms) if ms > 0 => c.time_ms = ms,
                _ => return KeepaliveModel::Invalid(k.to_vec()),
            },
            b"requests" => match strict_uint(v) {
                Some(n) if n > 0 && n <= u128::from(u64::MAX) => c.requests = n as u64,
                _ => return KeepaliveModel::Invalid(k.to_vec()),
            },
            _ => return KeepaliveModel::Unknown(k.to_vec()),
        }
    }
    KeepaliveModel::Ok(c)
}

fn keepalive_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let param = prop_oneof![
        (prop::sample::select(vec!["timeout", "time"]), time_text()).prop_map(|(k, v)| [
            k.as_bytes(),
            b"=",
            &v
        ]
        .concat()),
        (
            prop::sample::select(vec!["requests", "requests", "idle", ""]),
            number_text()
        )
            .prop_map(|(k, v)| [k.as_bytes(), b"=", &v].concat()),
        "[a-z0-9]{0,6}".prop_map(String::into_bytes),
    ];
    (
        prop::option::of(prop_oneof![3 => (1u32..=1024).prop_map(|n| n.to_string().into_bytes()), 1 => number_text()]),
        vec(param, 0..4),
    )
        .prop_map(|(count, params)| count.into_iter().chain(params).collect())
}

/// What `lb_add_header` must answer: RFC 9110's token characters written out independently.
fn header_model(args: &[Vec<u8>]) -> Result<(Vec<u8>, Vec<u8>, bool), &'static str> {
    const TCHAR: &[u8] =
        b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let (name, value, flag) = match args {
        [n, v] => (n, v, None),
        [n, v, f] => (n, v, Some(f)),
        _ => return Err("count"),
    };
    if name.is_empty() {
        return Err("empty");
    }
    if !name.iter().all(|b| TCHAR.contains(b)) {
        return Err("name");
    }
    if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err("value");
    }
    match flag {
        None => Ok((name.clone(), value.clone(), false)),
        Some(f) if f.as_slice() == b"always" => Ok((name.clone(), value.clone(), true)),
        Some(_) => Err("flag"),
    }
}

/// What `lb_outlier` must answer (its numbers are digits only, like nginx's).
fn outlier_model(args: &[Vec<u8>]) -> Result<outlier::OutlierConf, String> {
    let mut c = outlier::OutlierConf::default();
    let mut seen = HashSet::new();
    for arg in args {
        let Some(eq) = arg.iter().position(|&b| b == b'=') else {
            return Err("not key=value".into());
        };
        let (k, v) = (&arg[..eq], &arg[eq + 1..]);
        let count = || strict_uint(v).filter(|&n| n <= 1000).map(|n| n as u32);
        let time = || nginx_parse_time_ms(v).filter(|&ms| ms > 0);
        let ok = match k {
            b"consecutive_5xx" => count().map(|n| c.consecutive_5xx = n),
            b"consecutive_errors" => count().map(|n| c.consecutive_errors = n),
            b"base_ejection" => time().map(|ms| c.base_ejection_ms = ms),
            b"max_ejection" => time().map(|ms| c.max_ejection_ms = ms),
            b"max_percent" => strict_uint(v.strip_suffix(b"%").unwrap_or(v))
                .filter(|n| (1..=100).contains(n))
                .map(|n| c.max_percent = n as u32),
            _ => return Err(format!("unknown {}", k.escape_ascii())),
        };
        if ok.is_none() {
            return Err(format!("invalid {}", k.escape_ascii()));
        }
        if !seen.insert(k.to_vec()) {
            return Err("twice".into());
        }
    }
    if c.max_ejection_ms < c.base_ejection_ms {
        return Err("max below base".into());
    }
    if c.consecutive_5xx == 0 && c.consecutive_errors == 0 {
        return Err("nothing".into());
    }
    Ok(c)
}

fn outlier_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let param = prop_oneof![
        (
            prop::sample::select(vec!["consecutive_5xx", "consecutive_errors"]),
            prop_oneof![3 => (0u32..=1100).prop_map(|n| n.to_string().into_bytes()), 1 => number_text()]
        )
            .prop_map(|(k, v)| [k.as_bytes(), b"=", &v].concat()),
        (prop::sample::select(vec!["base_ejection", "max_ejection"]), time_text())
            .prop_map(|(k, v)| [k.as_bytes(), b"=", &v].concat()),
        (0u32..=120, prop::sample::select(vec!["", "%", "%%", "+"]))
            .prop_map(|(n, s)| format!("max_percent={n}{s}").into_bytes()),
        "[a-z_0-9=]{0,8}".prop_map(String::into_bytes),
    ];
    vec(param, 0..5)
}

proptest! {
    #![proptest_config(config(4096))]

    /// lb_keepalive answers as its model: the count first, then timeout=, time=, requests=.
    #[test]
    fn keepalive_matches_its_model(args in keepalive_args()) {
        let got = keepalive::parse(&refs(&args));
        let want = keepalive_model(&args);
        let same = match (&got, &want) {
            (Ok(c), KeepaliveModel::Ok(m)) => c == m,
            (Err(KeepaliveError::NoCount), KeepaliveModel::NoCount) => true,
            (Err(KeepaliveError::BadCount(v)), KeepaliveModel::BadCount) => v == &args[0],
            (Err(KeepaliveError::NotKeyValue(_)), KeepaliveModel::NotKeyValue) => true,
            (Err(KeepaliveError::InvalidValue(e)), KeepaliveModel::Invalid(k)) => &e.key == k,
            (Err(KeepaliveError::UnknownParameter(k)), KeepaliveModel::Unknown(m)) => k == m,
            _ => false,
        };
        prop_assert!(same, "{:?}: got {:?}, model {:?}", args.iter().map(|a| a.escape_ascii().to_string()).collect::<Vec<_>>(), got, want);
    }

    /// lb_add_header answers as its model for any bytes.
    #[test]
    fn add_header_matches_its_model(
        args in vec(
            prop_oneof![
                2 => "[A-Za-z0-9!#$%&'*+.^_`|~-]{0,8}".prop_map(String::into_bytes),
                1 => vec(prop::sample::select(b"aZ-_: \t\r\n\0\x7f\xc3\"(),/;<=>?@[]{}".to_vec()), 0..6),
                1 => Just(b"always".to_vec()),
                1 => vec(any::<u8>(), 0..8),
            ],
            0..5,
        )
    ) {
        let r = refs(&args);
        let got = parse_add_header(&r);
        match (got, header_model(&args)) {
            (Ok(h), Ok((name, value, always))) => {
                prop_assert_eq!((h.name, h.value, h.always), (&name[..], &value[..], always));
            }
            (Err(e), Err(kind)) => {
                let agree = matches!(
                    (&e, kind),
                    (HeaderError::ArgumentCount(_), "count")
                        | (HeaderError::EmptyName, "empty")
                        | (HeaderError::BadName { .. }, "name")
                        | (HeaderError::BadValue { .. }, "value")
                        | (HeaderError::BadFlag(_), "flag")
                );
                prop_assert!(agree, "{:?} vs {}", e, kind);
                prop_assert!(!e.to_string().contains('\n'), "an error message is one line");
            }
            (got, want) => prop_assert!(false, "{:?} vs model {:?}", got, want),
        }
    }

    /// lb_outlier answers as its model: digits-only counts, times, each key once.
    #[test]
    fn outlier_matches_its_model(args in outlier_args()) {
        let got = outlier::parse(&refs(&args));
        let want = outlier_model(&args);
        prop_assert_eq!(got.is_ok(), want.is_ok(), "{:?}: {:?} vs {:?}", args.iter().map(|a| a.escape_ascii().to_string()).collect::<Vec<_>>(), got, want);
        if let (Ok(c), Ok(m)) = (got, want) {
            prop_assert_eq!(c, m);
        }
    }

    /// lb_panic takes `N%` with N from 1 to 100 in digits, nothing else.
    #[test]
    fn panic_percent_matches_its_model(
        arg in prop_oneof![
            (0u32..1000, prop::sample::select(vec!["%", "", "%%", " %"]), prop::sample::select(vec!["", "0", "00", "+", "-"]))
                .prop_map(|(n, suffix, prefix)| format!("{prefix}{n}{suffix}").into_bytes()),
            vec(any::<u8>(), 0..6),
        ]
    ) {
        let want = arg
            .strip_suffix(b"%")
            .filter(|d| (1..=3).contains(&d.len()))
            .and_then(strict_uint)
            .filter(|n| (1..=100).contains(n))
            .map(|n| n as u32);
        prop_assert_eq!(panic::parse_percent(&arg), want, "{}", arg.escape_ascii());
    }

    /// No directive parser panics on any bytes, and every refusal has a message.
    #[test]
    fn directive_parsers_never_panic(args in junk_args()) {
        let r = refs(&args);
        if let Err(e) = method::parse(&r) { prop_assert!(!e.to_string().is_empty()); }
        if let Err(e) = keepalive::parse(&r) { prop_assert!(!e.to_string().is_empty()); }
        if let Err(e) = parse_check(&r) { prop_assert!(!e.to_string().is_empty()); }
        if let Err(e) = parse_add_header(&r) { prop_assert!(!e.to_string().is_empty()); }
        if let Err(e) = outlier::parse(&r) { prop_assert!(!e.to_string().is_empty()); }
        for a in &r {
            let _ = panic::parse_percent(a);
            let _ = parse_time_ms(a);
        }
    }
}

// lb_check ------------------------------------------------------------------------------------

/// What `lb_check` must answer.
#[derive(Debug, PartialEq)]
enum CheckModel {
    Ok(Box<CheckConf>),
    NotKeyValue(Vec<u8>),
    Invalid { key: Vec<u8>, value: Vec<u8> },
    Unknown(Vec<u8>),
    TimeoutOverInterval,
    JitterNotShorter,
    NeedsHttp(&'static str),
    NeedsHttps(&'static str),
    CertWithoutKey,
    VerifyWithoutCa,
    UdpWithoutSend,
}

/// `status=`: codes and ranges from 100 to 599, comma-separated.
fn status_model(v: &[u8]) -> Option<Vec<(u16, u16)>> {
    v.split(|&b| b == b',')
        .map(|part| {
            let (lo, hi) = match part.iter().position(|&b| b == b'-') {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, part),
            };
            let code = |t: &[u8]| {
                strict_uint(t)
                    .filter(|n| (100..=599).contains(n))
                    .map(|n| n as u16)
            };
            let (lo, hi) = (code(lo)?, code(hi)?);
            (lo <= hi).then_some((lo, hi))
        })
        .collect()
}

fn check_model(args: &[Vec<u8>]) -> CheckModel {
    let mut c = CheckConf::default();
    let (mut http_only, mut tls_only, mut timeout_set) = (None, None, false);
    for arg in args {
        let Some(eq) = arg.iter().position(|&b| b == b'=') else {
            return CheckModel::NotKeyValue(arg.clone());
        };
        let (k, v) = (&arg[..eq], &arg[eq + 1..]);
        let positive_time = nginx_parse_time_ms(v).filter(|&ms| ms > 0);
        let on_off = match v {
            b"on" => Some(true),
            b"off" => Some(false),
            _ => None,
        };
        let ok: Option<()> = match k {
            b"type" => match v {
                b"tcp" => Some(Kind::Tcp),
                b"http" => Some(Kind::Http),
                b"https" => Some(Kind::Https),
                b"udp" => Some(Kind::Udp),
                b"tls" => Some(Kind::Tls),
                _ => None,
            }
            .map(|kind| c.kind = kind),
            b"interval" => positive_time.map(|ms| c.interval_ms = ms),
            b"timeout" => positive_time.map(|ms| {
                c.timeout_ms = ms;
                timeout_set = true;
            }),
            b"jitter" => nginx_parse_time_ms(v).map(|ms| c.jitter_ms = ms),
            b"keepalive_time" => positive_time.map(|ms| {
                c.keepalive_time_ms = ms;
                http_only = Some("keepalive_time");
            }),
            b"rise" | b"fall" => strict_uint(v).filter(|n| (1..=1000).contains(n)).map(|n| {
                if k == b"rise" {
                    c.rise = n as u32
                } else {
                    c.fall = n as u32
                }
            }),
            b"uri" => {
                (v.first() == Some(&b'/') && v.iter().all(|&b| b > b' ' && b != 0x7f)).then(|| {
                    c.uri = String::from_utf8_lossy(v).into_owned();
                    http_only = Some("uri");
                })
            }
            b"host" => (!v.is_empty()
                && v.iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)))
            .then(|| c.host = Some(String::from_utf8_lossy(v).into_owned())),
            b"method" => match v {
                b"GET" => Some(HttpMethod::Get),
                b"HEAD" => Some(HttpMethod::Head),
                _ => None,
            }
            .map(|m| {
                c.method = m;
                http_only = Some("method");
            }),
            b"status" => status_model(v).map(|s| {
                c.status.0 = s;
                http_only = Some("status");
            }),
            b"body" => v.strip_prefix(b"~").and_then(|re| {
                let re = match re {
                    [b'"', inner @ .., b'"'] => inner,
                    _ => re,
                };
                (!re.is_empty()).then(|| {
                    c.body = Some(String::from_utf8_lossy(re).into_owned());
                    http_only = Some("body");
                })
            }),
            b"port" => strict_uint(v)
                .filter(|n| (1..=65535).contains(n))
                .map(|n| c.port = Some(n as u16)),
            b"default" => match v {
                b"up" => Some(true),
                b"down" => Some(false),
                _ => None,
            }
            .map(|up| c.default_up = up),
            b"keepalive" => on_off.map(|on| {
                c.keepalive = on;
                http_only = Some("keepalive");
            }),
            b"sni" => on_off.map(|on| {
                c.sni = on;
                tls_only = Some("sni");
            }),
            b"verify" => on_off.map(|on| {
                c.verify = on;
                tls_only = Some("verify");
            }),
            b"ca" | b"cert" | b"key" => (!v.is_empty()).then(|| {
                let file = Some(String::from_utf8_lossy(v).into_owned());
                let (slot, name) = match k {
                    b"ca" => (&mut c.trusted_ca, "ca"),
                    b"cert" => (&mut c.cert, "cert"),
                    _ => (&mut c.key, "key"),
                };
                *slot = file;
                tls_only = Some(name);
            }),
            _ => return CheckModel::Unknown(k.to_vec()),
        };
        if ok.is_none() {
            return CheckModel::Invalid {
                key: k.to_vec(),
                value: v.to_vec(),
            };
        }
    }
    // An interval shorter than the default timeout pulls the timeout down with it.
    if !timeout_set {
        c.timeout_ms = c.timeout_ms.min(c.interval_ms);
    }
    if c.timeout_ms > c.interval_ms {
        return CheckModel::TimeoutOverInterval;
    }
    if c.jitter_ms >= c.interval_ms {
        return CheckModel::JitterNotShorter;
    }
    if let (Some(k), false) = (http_only, matches!(c.kind, Kind::Http | Kind::Https)) {
        return CheckModel::NeedsHttp(k);
    }
    if let (Some(k), false) = (tls_only, matches!(c.kind, Kind::Https | Kind::Tls)) {
        return CheckModel::NeedsHttps(k);
    }
    // (The generated lines have no `send=`: a UDP check needs one.)
    if c.kind == Kind::Udp {
        return CheckModel::UdpWithoutSend;
    }
    if c.cert.is_some() != c.key.is_some() {
        return CheckModel::CertWithoutKey;
    }
    if c.verify && c.trusted_ca.is_none() {
        return CheckModel::VerifyWithoutCa;
    }
    CheckModel::Ok(Box::new(c))
}

/// Status sets as `status=` writes them, and near misses.
fn status_text() -> impl Strategy<Value = Vec<u8>> {
    let range = (90u16..620, 0u16..120).prop_map(|(lo, len)| {
        if len < 40 {
            lo.to_string()
        } else {
            format!("{lo}-{}", lo + len - 40)
        }
    });
    prop_oneof![
        4 => vec(range, 1..4).prop_map(|r| r.join(",").into_bytes()),
        1 => vec(prop::sample::select(b"0123456789,-+ ".to_vec()), 0..12),
    ]
}

/// A value for key `k`: mostly valid, sometimes wrong.
fn check_value(k: &'static str) -> BoxedStrategy<Vec<u8>> {
    let words = |w: &'static [&'static str]| {
        prop::sample::select(w.to_vec())
            .prop_map(|s| s.as_bytes().to_vec())
            .boxed()
    };
    match k {
        "type" => words(&[
            "tcp", "http", "https", "https", "http", "udp", "tls", "HTTP", "",
        ]),
        "interval" | "timeout" | "jitter" | "keepalive_time" => prop_oneof![
            3 => (0u64..5000, any::<u8>()).prop_map(|(ms, f)| spell_time(ms, f).into_bytes()),
            1 => time_text(),
        ]
        .boxed(),
        "rise" | "fall" | "port" => number_text().boxed(),
        "uri" => prop_oneof![
            3 => "/[a-z0-9/?=&.%-]{0,10}".prop_map(String::into_bytes),
            1 => vec(any::<u8>(), 0..6).prop_map(|v| [b"/".to_vec(), v].concat()),
            1 => words(&["health", "", "/a b", "/\x7f"]),
        ]
        .boxed(),
        "host" => prop_oneof![
            3 => "[a-z0-9.:\\[\\]_-]{1,12}".prop_map(String::into_bytes),
            1 => vec(any::<u8>(), 0..6),
        ]
        .boxed(),
        "method" => words(&["GET", "HEAD", "get", "POST"]),
        "status" => status_text().boxed(),
        "body" => prop_oneof![
            3 => "~[a-z|\"]{0,8}".prop_map(String::into_bytes),
            1 => words(&["~", "~\"\"", "~\"", "ok"]),
        ]
        .boxed(),
        "default" => words(&["up", "down", "maybe"]),
        "keepalive" | "sni" | "verify" => words(&["on", "off", "yes", "ON"]),
        "ca" | "cert" | "key" => words(&["/etc/ca.pem", "", "k.pem"]),
        _ => vec(any::<u8>(), 0..6).boxed(),
    }
}

const CHECK_KEYS: [&str; 22] = [
    "type",
    "interval",
    "timeout",
    "rise",
    "fall",
    "jitter",
    "uri",
    "host",
    "method",
    "status",
    "body",
    "port",
    "default",
    "keepalive",
    "keepalive_time",
    "sni",
    "verify",
    "ca",
    "cert",
    "key",
    "colour",
    "",
];

fn check_arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => prop::sample::select(CHECK_KEYS.to_vec())
            .prop_flat_map(|k| check_value(k).prop_map(move |v| [k.as_bytes(), b"=", &v].concat())),
        1 => "[a-z]{0,6}".prop_map(String::into_bytes),
    ]
}

/// `lb_check` arguments: a type first more often than not, then parameters.
fn check_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (
        prop::option::of(prop::sample::select(vec![
            "type=http",
            "type=https",
            "type=tcp",
            "type=tls",
            "type=udp",
        ])),
        vec(check_arg(), 0..6),
    )
        .prop_map(|(t, rest)| {
            t.map(|t| t.as_bytes().to_vec())
                .into_iter()
                .chain(rest)
                .collect()
        })
}

fn check_agrees(got: &Result<CheckConf, CheckError>, want: &CheckModel) -> bool {
    match (got, want) {
        (Ok(c), CheckModel::Ok(m)) => c == &**m,
        (Err(CheckError::NotKeyValue(e)), CheckModel::NotKeyValue(a)) => &e.0 == a,
        (Err(CheckError::InvalidValue(e)), CheckModel::Invalid { key, value }) => {
            &e.key == key && &e.value == value
        }
        (Err(CheckError::UnknownParameter(k)), CheckModel::Unknown(m)) => k == m,
        (Err(CheckError::TimeoutOverInterval { .. }), CheckModel::TimeoutOverInterval)
        | (Err(CheckError::JitterNotShorter { .. }), CheckModel::JitterNotShorter)
        | (Err(CheckError::CertWithoutKey), CheckModel::CertWithoutKey)
        | (Err(CheckError::VerifyWithoutCa), CheckModel::VerifyWithoutCa)
        | (Err(CheckError::UdpWithoutSend), CheckModel::UdpWithoutSend) => true,
        (Err(CheckError::NeedsHttp(a)), CheckModel::NeedsHttp(b))
        | (Err(CheckError::NeedsHttps(a)), CheckModel::NeedsHttps(b)) => a == b,
        _ => false,
    }
}

proptest! {
    #![proptest_config(config(4096))]

    /// lb_check answers as its model, for every parameter and their combinations: the first
    /// bad value is the one named, accepted lines give the configuration the model builds.
    #[test]
    fn check_matches_its_model(args in check_args()) {
        let got = parse_check(&refs(&args));
        let want = check_model(&args);
        prop_assert!(
            check_agrees(&got, &want),
            "{:?}: got {:?}, model {:?}",
            args.iter().map(|a| a.escape_ascii().to_string()).collect::<Vec<_>>(),
            got,
            want
        );
        if let Some(c) = got.as_ref().ok().filter(|c| c.kind.is_http()) {
            // The request it sends is one line per header, whatever the line said.
            let req = c.request("10.0.0.1:80");
            prop_assert!(req.ends_with(b"\r\n\r\n"));
            prop_assert_eq!(req.iter().filter(|&&b| b == b'\n').count(), req.windows(2).filter(|w| w == b"\r\n").count());
        }
    }

    /// Parameters with distinct keys mean the same in any order.
    #[test]
    fn check_is_order_independent(
        (args, shuffled) in check_args()
            .prop_map(|args| {
                let mut seen = HashSet::new();
                args.into_iter()
                    .filter(|a| seen.insert(a.split(|&b| b == b'=').next().unwrap_or_default().to_vec()))
                    .collect::<Vec<_>>()
            })
            .prop_flat_map(|a| (Just(a.clone()), Just(a).prop_shuffle()))
    ) {
        let a = parse_check(&refs(&args));
        let b = parse_check(&refs(&shuffled));
        prop_assert_eq!(a.is_ok(), b.is_ok(), "{:?} vs {:?}", a, b);
        if a.is_ok() {
            prop_assert_eq!(a, b);
        }
    }

    /// A status set, written as its Display shows it, reads back as the same set.
    #[test]
    fn check_status_round_trips(ranges in vec((100u16..=599, 0u16..50), 1..5), code in 90u16..620) {
        let set: Vec<(u16, u16)> = ranges.iter().map(|&(lo, len)| (lo, (lo + len).min(599))).collect();
        let text = set
            .iter()
            .map(|&(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") })
            .collect::<Vec<_>>()
            .join(",");
        let arg = format!("status={text}");
        let c = parse_check(&[b"type=http", arg.as_bytes()]).unwrap();
        prop_assert_eq!(&c.status.0, &set);
        prop_assert_eq!(c.status.to_string(), text);
        prop_assert_eq!(c.status.contains(code), set.iter().any(|&(lo, hi)| lo <= code && code <= hi));
    }
}

// ---------------------------------------------------------------------------------------------
// health::response: the probe response parser.

/// How the final response says where its body ends.
#[derive(Debug, Clone)]
enum Framing {
    /// `Content-Length`, its value with `zeros` leading zeros and spaces around it.
    Length {
        body: Vec<u8>,
        zeros: usize,
        spaces: bool,
    },
    /// `Transfer-Encoding: [gzip, ]chunked`; each chunk's size line styled by `style` bits
    /// (upper-case hex, zero padding, an extension, spaces).
    Chunked {
        chunks: Vec<Vec<u8>>,
        style: u64,
        trailers: Vec<(String, String)>,
        gzip: bool,
    },
    /// Neither: the body ends when the connection closes.
    Close(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Response {
    /// Interim responses first (1xx but 101), each with its own headers.
    interim: Vec<(u16, Vec<(String, String)>)>,
    minor: u8,
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    /// A `Connection` header's value.
    connection: Option<&'static str>,
    framing: Framing,
    /// The probe was a HEAD request.
    head: bool,
    /// Bytes the peer sent after the response (out of step).
    trailing: Vec<u8>,
    /// Letter case of the framing headers' names.
    case_bits: u64,
}

/// A response rendered, and what its parse must say at each length.
#[derive(Debug)]
struct Rendered {
    bytes: Vec<u8>,
    status: u16,
    head_end: usize,
    body: Vec<u8>,
    /// The connection may carry the next probe (before looking at what follows).
    keep: bool,
    kind: Shape,
}

#[derive(Debug)]
enum Shape {
    /// No body (HEAD, 1xx, 204, 304).
    NoBody,
    Length,
    /// Chunked: the last chunk's size line ends at `done_at`; `trailers` follow it.
    Chunked {
        done_at: usize,
        trailers: bool,
    },
    Close,
}

impl Rendered {
    /// The answer for the first `len` bytes, `eof` the connection closed after them.
    fn expected(&self, len: usize, eof: bool) -> Progress {
        let complete = |body: Vec<u8>, end: Option<usize>| Progress::Complete {
            status: self.status,
            body,
            reusable: self.keep && !eof && end == Some(len),
        };
        if len < self.head_end {
            return if eof {
                Progress::Invalid(ResponseError::ClosedInHeaders)
            } else {
                Progress::NeedMore
            };
        }
        match self.kind {
            Shape::NoBody => complete(Vec::new(), Some(self.head_end)),
            Shape::Length => {
                let end = self.head_end + self.body.len();
                if len >= end {
                    complete(self.body.clone(), Some(end))
                } else if eof {
                    Progress::Invalid(ResponseError::ClosedInBody)
                } else {
                    Progress::NeedMore
                }
            }
            Shape::Chunked { done_at, trailers } => {
                if len >= done_at {
                    complete(self.body.clone(), (!trailers).then_some(done_at + 2))
                } else if eof {
                    Progress::Invalid(ResponseError::ClosedInChunks)
                } else {
                    Progress::NeedMore
                }
            }
            Shape::Close if eof => Progress::Complete {
                status: self.status,
                body: self.bytes[self.head_end..len].to_vec(),
                reusable: false,
            },
            Shape::Close => Progress::NeedMore,
        }
    }
}

fn cased(name: &str, bits: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if (bits >> (i % 64)) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn render(r: &Response) -> Rendered {
    let mut out = Vec::new();
    let header = |out: &mut Vec<u8>, name: &str, value: &str| {
        out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
    };
    for (status, headers) in &r.interim {
        out.extend_from_slice(format!("HTTP/1.1 {status} Interim\r\n").as_bytes());
        for (n, v) in headers {
            header(&mut out, n, v);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("HTTP/1.{} {}{}\r\n", r.minor, r.status, r.reason).as_bytes());
    // Framing and Connection headers go among the others, at a place the case bits choose.
    let mut lines: Vec<(String, String)> = r.headers.clone();
    let mut place = |name: &str, value: String, salt: u32| {
        let at = (r.case_bits.rotate_left(salt) % (lines.len() as u64 + 1)) as usize;
        lines.insert(at, (cased(name, r.case_bits.rotate_left(salt)), value));
    };
    if let Some(c) = r.connection {
        place("connection", format!(" {c}"), 7);
    }
    match &r.framing {
        Framing::Length {
            body,
            zeros,
            spaces,
        } => {
            let sp = if *spaces { "  " } else { " " };
            let value = format!("{sp}{}{}{sp}", "0".repeat(*zeros), body.len());
            place("content-length", value, 13);
        }
        Framing::Chunked { gzip, .. } => {
            let value = if *gzip { " gzip, chunked" } else { " chunked" };
            place("transfer-encoding", value.into(), 21);
        }
        Framing::Close(_) => {}
    }
    for (n, v) in &lines {
        header(&mut out, n, v);
    }
    out.extend_from_slice(b"\r\n");
    let head_end = out.len();
    let keep = r.minor == 1
        && !r
            .connection
            .is_some_and(|c| c.to_ascii_lowercase().contains("close"))
        && r.status >= 200;
    let no_body = r.head || r.status < 200 || r.status == 204 || r.status == 304;
    let (body, kind) = match &r.framing {
        _ if no_body => (Vec::new(), Shape::NoBody),
        Framing::Length { body, .. } => {
            out.extend_from_slice(body);
            (body.clone(), Shape::Length)
        }
        Framing::Chunked {
            chunks,
            style,
            trailers,
            ..
        } => {
            let size_line = |out: &mut Vec<u8>, size: usize, k: u64| {
                let bits = style.rotate_left((k * 5) as u32);
                let hex = if bits & 1 == 1 {
                    format!("{size:X}")
                } else {
                    format!("{size:x}")
                };
                let width = ((bits >> 1) % 8) as usize + 1;
                let padded = format!("{hex:0>width$}");
                let pre = if bits & 0x10 != 0 { " " } else { "" };
                let post = if bits & 0x20 != 0 { " " } else { "" };
                let ext = if bits & 0x40 != 0 { ";name=\"v\"" } else { "" };
                out.extend_from_slice(format!("{pre}{padded}{post}{ext}\r\n").as_bytes());
            };
            for (k, chunk) in chunks.iter().enumerate() {
                size_line(&mut out, chunk.len(), k as u64);
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            size_line(&mut out, 0, chunks.len() as u64);
            let done_at = out.len();
            for (n, v) in trailers {
                header(&mut out, n, v);
            }
            out.extend_from_slice(b"\r\n");
            (
                chunks.concat(),
                Shape::Chunked {
                    done_at,
                    trailers: !trailers.is_empty(),
                },
            )
        }
        Framing::Close(body) => {
            out.extend_from_slice(body);
            (body.clone(), Shape::Close)
        }
    };
    out.extend_from_slice(&r.trailing);
    Rendered {
        bytes: out,
        status: r.status,
        head_end,
        body,
        keep,
        kind,
    }
}

fn header_lines() -> impl Strategy<Value = Vec<(String, String)>> {
    let name =
        "[A-Za-z][A-Za-z0-9-]{0,10}".prop_filter("framing headers come from the model", |n| {
            !matches!(
                n.to_ascii_lowercase().as_str(),
                "content-length" | "transfer-encoding" | "connection"
            )
        });
    vec((name, "[ -~]{0,16}"), 0..4)
}

fn response() -> impl Strategy<Value = Response> {
    let framing = prop_oneof![
        (vec(any::<u8>(), 0..120), 0usize..3, any::<bool>()).prop_map(|(body, zeros, spaces)| {
            Framing::Length {
                body,
                zeros,
                spaces,
            }
        }),
        (
            vec(vec(any::<u8>(), 1..40), 0..5),
            any::<u64>(),
            prop_oneof![3 => Just(Vec::new()), 1 => header_lines()],
            any::<bool>()
        )
            .prop_map(|(chunks, style, trailers, gzip)| Framing::Chunked {
                chunks,
                style,
                trailers,
                gzip,
            }),
        vec(any::<u8>(), 0..120).prop_map(Framing::Close),
    ];
    let status = prop_oneof![
        8 => 200u16..=599,
        1 => prop::sample::select(vec![101u16, 204, 304]),
    ];
    let interim_status = prop_oneof![100u16..=100, 102u16..=199];
    (
        vec((interim_status, header_lines()), 0..3),
        prop_oneof![4 => Just(1u8), 1 => Just(0u8)],
        status,
        prop_oneof![Just(String::new()), Just(" ".to_string()), " [ -~]{1,12}"],
        header_lines(),
        prop::option::of(prop::sample::select(vec![
            "keep-alive",
            "close",
            "Upgrade, CLOSE",
            "TE",
        ])),
        framing,
        prop_oneof![4 => Just(false), 1 => Just(true)],
        prop_oneof![4 => Just(Vec::new()), 1 => vec(any::<u8>(), 1..20)],
        any::<u64>(),
    )
        .prop_map(
            |(
                interim,
                minor,
                status,
                reason,
                headers,
                connection,
                framing,
                head,
                trailing,
                case_bits,
            )| {
                Response {
                    interim,
                    minor,
                    status,
                    reason,
                    headers,
                    connection,
                    framing,
                    head,
                    trailing,
                    case_bits,
                }
            },
        )
}

/// Cut points in a buffer of `len` bytes, sorted, each a length the reader may have received.
fn cuts(picks: &[Index], len: usize) -> Vec<usize> {
    let mut c: Vec<usize> = picks.iter().map(|ix| ix.index(len + 1)).collect();
    c.sort_unstable();
    c.dedup();
    c
}

/// Mutations of a buffer: replace, insert or delete bytes from an HTTP-ish alphabet.
fn mutate(mut buf: Vec<u8>, edits: &[(Index, u8, u8)]) -> Vec<u8> {
    const ALPHABET: &[u8] = b"HTP/1. 0123456789abcdefxABCDEF:;,\r\n\r\n-chunkedContent-Length";
    for (at, op, b) in edits {
        let b = ALPHABET[usize::from(*b) % ALPHABET.len()];
        let i = at.index(buf.len() + 1);
        match op % 3 {
            0 if i < buf.len() => buf[i] = b,
            1 => buf.insert(i, b),
            _ if i < buf.len() => {
                buf.remove(i);
            }
            _ => {}
        }
    }
    buf
}

/// Responses that are almost right, and plain noise.
fn noisy_response() -> impl Strategy<Value = Vec<u8>> {
    let tokens = prop::sample::select(vec![
        "HTTP/1.1 ",
        "HTTP/1.0 ",
        "200",
        "103",
        "101",
        " OK",
        "\r\n",
        "\r\n\r\n",
        "\n",
        "Content-Length: ",
        "Transfer-Encoding: chunked",
        "Connection: close",
        "0",
        "5",
        "ffffffff",
        "hello",
        ":",
        ";",
        " ",
    ]);
    prop_oneof![
        6 => (response(), vec((any::<Index>(), any::<u8>(), any::<u8>()), 1..4))
            .prop_map(|(r, edits)| mutate(render(&r).bytes, &edits)),
        2 => vec(tokens, 0..16).prop_map(|t| format!("HTTP/1.1 {}", t.concat()).into_bytes()),
        1 => vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(config(4096))]

    /// Well-formed responses (interim responses, any framing, trailers, HEAD, extra bytes):
    /// fed in arbitrary chunks to one `Parser`, the answer at every cut is what the model
    /// says for that many bytes, the same as a fresh parse of them, and a connection closed at
    /// any cut gets the model's verdict too.
    #[test]
    fn probe_response_matches_its_model(
        resp in response(),
        picks in vec(any::<Index>(), 0..10),
        eof in any::<bool>(),
    ) {
        let r = render(&resp);
        let buf = &r.bytes;
        let mut p = Parser::default();
        let mut done = false;
        for cut in cuts(&picks, buf.len()) {
            let want = r.expected(cut, false);
            prop_assert_eq!(&parse(&buf[..cut], true, resp.head), &r.expected(cut, true), "closed at {}: {}", cut, buf.escape_ascii());
            prop_assert_eq!(&parse(&buf[..cut], false, resp.head), &want, "fresh at {}: {}", cut, buf.escape_ascii());
            if !done {
                prop_assert_eq!(&p.parse(&buf[..cut], false, resp.head), &want, "resumed at {}: {}", cut, buf.escape_ascii());
                done = want != Progress::NeedMore;
            }
        }
        let whole = r.expected(buf.len(), eof);
        prop_assert_eq!(&parse(buf, eof, resp.head), &whole, "{}", buf.escape_ascii());
        if !done {
            prop_assert_eq!(&p.parse(buf, eof, resp.head), &whole, "resumed: {}", buf.escape_ascii());
        }
    }

    /// Any bytes: no panic, bodies within the bound, a resumed parser answers as a fresh one
    /// at every cut of arbitrary size, and a verdict is final: once a prefix is complete or
    /// invalid, the whole (below the size bound) says the same (but for reuse).
    #[test]
    fn probe_response_verdicts_are_final(
        buf in noisy_response(),
        picks in vec(any::<Index>(), 0..10),
        head in any::<bool>(),
        eof in any::<bool>(),
    ) {
        let whole = parse(&buf, false, head);
        let strip = |p: &Progress| match p {
            Progress::Complete { status, body, .. } => Progress::Complete {
                status: *status,
                body: body.clone(),
                reusable: false,
            },
            other => other.clone(),
        };
        let mut p = Parser::default();
        let mut done = false;
        for cut in cuts(&picks, buf.len()) {
            let fresh = parse(&buf[..cut], false, head);
            if let Progress::Complete { body, .. } = &fresh {
                prop_assert!(body.len() <= cut);
            }
            if !done {
                prop_assert_eq!(&p.parse(&buf[..cut], false, head), &fresh, "resumed at {}: {}", cut, buf.escape_ascii());
                done = fresh != Progress::NeedMore;
            }
            if fresh != Progress::NeedMore {
                prop_assert_eq!(strip(&fresh), strip(&whole), "at {}: {}", cut, buf.escape_ascii());
            }
        }
        let last = parse(&buf, eof, head);
        if !done {
            prop_assert_eq!(&p.parse(&buf, eof, head), &last, "{}", buf.escape_ascii());
        }
        if let Progress::Complete { body, reusable, .. } = &last {
            prop_assert!(body.len() <= buf.len());
            prop_assert!(!(eof && *reusable), "a closed connection is not reused");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// status::query, and the renderers' escaping of names from outside.

/// `%XX` (two hex digits) and `+` decoding, written independently of the module's.
fn unescape_model(v: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::new();
    let mut rest = v;
    while let Some((&c, tail)) = rest.split_first() {
        match (c, tail) {
            (b'%', [h, l, after @ ..]) if hex(*h).is_some() && hex(*l).is_some() => {
                out.push(hex(*h).unwrap_or(0) * 16 + hex(*l).unwrap_or(0));
                rest = after;
                continue;
            }
            (b'+', _) => out.push(b' '),
            _ => out.push(c),
        }
        rest = tail;
    }
    out
}

fn query_model(args: &[u8], accept: Option<&[u8]>) -> Result<query::Query, Vec<u8>> {
    let mut format = None;
    let mut upstream = None;
    for pair in args.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let mut kv = pair.splitn(2, |&b| b == b'=');
        let key = kv.next().unwrap_or_default();
        let value = unescape_model(kv.next().unwrap_or_default());
        if key == b"format" {
            format = Some(match &value[..] {
                b"json" => query::Format::Json,
                b"prometheus" => query::Format::Prometheus,
                b"html" => query::Format::Html,
                _ => return Err(value),
            });
        } else if key == b"upstream" {
            upstream = Some(String::from_utf8_lossy(&value).into_owned());
        }
    }
    let prometheus_accept = accept.is_some_and(|a| {
        let a = String::from_utf8_lossy(a).to_lowercase();
        a.contains("text/plain") && a.contains("version=0.0.4")
    });
    Ok(query::Query {
        format: format.unwrap_or(if prometheus_accept {
            query::Format::Prometheus
        } else {
            query::Format::Json
        }),
        upstream,
    })
}

/// `byte` written for a query string in one of four ways.
fn encode_byte(b: u8, how: u8) -> Vec<u8> {
    match how % 4 {
        0 if !b"&%+".contains(&b) => vec![b],
        1 | 0 => format!("%{b:02X}").into_bytes(),
        2 => format!("%{b:02x}").into_bytes(),
        _ if b == b' ' => b"+".to_vec(),
        _ => format!("%{b:02X}").into_bytes(),
    }
}

/// Prometheus label escaping undone; `None` for a text no escaping produces.
fn prometheus_unescape(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                'n' => out.push('\n'),
                _ => return None,
            },
            '"' | '\n' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fn html_unescape(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if c == '&' {
            let (entity, ch) = [
                ("&amp;", '&'),
                ("&lt;", '<'),
                ("&gt;", '>'),
                ("&quot;", '"'),
                ("&#39;", '\''),
            ]
            .into_iter()
            .find(|(e, _)| rest.starts_with(e))?;
            out.push(ch);
            rest = &rest[entity.len()..];
        } else if "<>\"'".contains(c) {
            return None;
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    Some(out)
}

fn query_text() -> impl Strategy<Value = Vec<u8>> {
    let pair = prop_oneof![
        (
            prop::sample::select(vec!["format", "upstream", "Format", "x", ""]),
            prop::sample::select(vec!["=", "", "=="]),
            prop_oneof![
                prop::sample::select(vec![
                    "json",
                    "html",
                    "prometheus",
                    "xml",
                    "",
                    "js%6fn",
                    "%4a"
                ])
                .prop_map(String::from),
                "[a-z%+0-9A-F]{0,8}",
            ]
        )
            .prop_map(|(k, eq, v)| format!("{k}{eq}{v}").into_bytes()),
        vec(any::<u8>(), 0..8),
    ];
    vec((pair, prop::sample::select(vec!["&", "&&", ""])), 0..5).prop_map(|ps| {
        ps.into_iter()
            .flat_map(|(p, sep)| [p, sep.as_bytes().to_vec()])
            .flatten()
            .collect()
    })
}

proptest! {
    #![proptest_config(config(4096))]

    /// Any query string and Accept header: the answer of the model (last format= wins, the
    /// first unknown one is refused, %XX and + decoded, Accept decides without format=).
    #[test]
    fn status_query_matches_its_model(
        args in query_text(),
        accept in prop::option::of(prop_oneof![
            prop::sample::select(vec![
                "text/plain; version=0.0.4",
                "TEXT/PLAIN;VERSION=0.0.4; charset=utf-8",
                "text/plain",
                "application/json",
                "*/*",
            ]).prop_map(|s| s.as_bytes().to_vec()),
            vec(any::<u8>(), 0..24),
        ]),
    ) {
        let got = query::parse(&args, accept.as_deref());
        let want = query_model(&args, accept.as_deref());
        match (got, want) {
            (Ok(q), Ok(m)) => prop_assert_eq!(q, m),
            (Err(query::QueryError::UnknownFormat(v)), Err(m)) => prop_assert_eq!(v, m),
            (got, want) => prop_assert!(false, "{}: {:?} vs model {:?}", args.escape_ascii(), got, want),
        }
    }

    /// Any upstream name, %-encoded in any mix of ways among other parameters, comes back.
    #[test]
    fn status_query_upstream_round_trips(
        name in vec(any::<u8>(), 0..24),
        how in vec(any::<u8>(), 24),
        before in vec("[a-z]{1,6}=[a-z0-9]{0,6}", 0..3),
        after in vec("[a-z]{1,6}=[a-z0-9]{0,6}", 0..3),
        format in prop::sample::select(vec![None, Some("json"), Some("html"), Some("prometheus")]),
    ) {
        let enc: Vec<u8> = name.iter().zip(&how).flat_map(|(&b, &h)| encode_byte(b, h)).collect();
        let others = |v: &[String]| -> Vec<String> {
            v.iter().filter(|p| !p.starts_with("upstream=") && !p.starts_with("format=")).cloned().collect()
        };
        let mut parts: Vec<Vec<u8>> = others(&before).into_iter().map(String::into_bytes).collect();
        parts.push([b"upstream=".as_slice(), &enc].concat());
        parts.extend(others(&after).into_iter().map(String::into_bytes));
        if let Some(f) = format {
            parts.push(format!("format={f}").into_bytes());
        }
        let q = query::parse(&parts.join(&b'&'), None).unwrap();
        let name_text = String::from_utf8_lossy(&name).into_owned();
        prop_assert_eq!(q.upstream.as_deref(), Some(name_text.as_str()));
        let want = match format {
            Some("html") => query::Format::Html,
            Some("prometheus") => query::Format::Prometheus,
            _ => query::Format::Json,
        };
        prop_assert_eq!(q.format, want);
    }

    /// Names from outside (upstreams, peers, reasons) survive each renderer's escaping, which
    /// leaves nothing that ends the value early.
    #[test]
    fn renderers_escape_any_text(s in any::<String>()) {
        let p = prometheus::escape(&s);
        prop_assert_eq!(prometheus_unescape(&p), Some(s.clone()), "{:?}", p);
        let h = html::escape(&s);
        prop_assert_eq!(html_unescape(&h), Some(s.clone()), "{:?}", h);
        let j: serde_json::Value = serde_json::from_slice(&json::error(&s)).unwrap();
        prop_assert_eq!(j["error"].as_str(), Some(s.as_str()));
        let e = ApiError::new(400, s.clone());
        let j: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        prop_assert_eq!(j["error"].as_str(), Some(s.as_str()));
    }
}

// ---------------------------------------------------------------------------------------------
// lb_api: paths, PATCH and POST bodies; the lb_state file.

/// A JSON value for a field, and what it means to the model.
#[derive(Debug, Clone)]
struct Field {
    json: String,
    meaning: Meaning,
}

#[derive(Debug, Clone, PartialEq)]
enum Meaning {
    Null,
    Int(i128),
    Str(String),
    Bool(bool),
    /// A float or another type.
    Other,
}

fn json_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        4 => prop_oneof![-3i128..12_000, Just(i128::from(u32::MAX)), Just(i128::from(u32::MAX) + 1), Just(i128::from(u64::MAX))]
            .prop_map(|n| Field { json: n.to_string(), meaning: Meaning::Int(n) }),
        3 => prop::sample::select(vec!["up", "drain", "down", "maint", "UP", "", "10s", "1m30s", "soon", "0", "3", "400d"])
            .prop_map(|s| Field { json: format!("\"{s}\""), meaning: Meaning::Str(s.into()) }),
        1 => Just(Field { json: "null".into(), meaning: Meaning::Null }),
        1 => any::<bool>().prop_map(|b| Field { json: b.to_string(), meaning: Meaning::Bool(b) }),
        1 => prop::sample::select(vec!["1.5", "[]", "{}", "1e2", "-0.0"])
            .prop_map(|s| Field { json: s.into(), meaning: Meaning::Other }),
    ]
}

/// A JSON object from its fields, keys in the given order, with some spacing.
fn object(fields: &[(String, Field)], pad: usize) -> Vec<u8> {
    let body = fields
        .iter()
        .map(|(k, f)| format!("\"{k}\": {}", f.json))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{{{body}{}}}", " ".repeat(pad)).into_bytes()
}

/// A value for field `name`: mostly one of the values it takes, else any JSON value.
fn field_for(name: &'static str) -> BoxedStrategy<Field> {
    let int = |n: i128| Field {
        json: n.to_string(),
        meaning: Meaning::Int(n),
    };
    let text = |s: String| Field {
        json: format!("\"{s}\""),
        meaning: Meaning::Str(s),
    };
    let valid: BoxedStrategy<Field> = match name {
        "admin" => prop::sample::select(vec!["up", "drain", "down"])
            .prop_map(move |s| text(s.into()))
            .boxed(),
        "weight" => (1..=i128::from(api::MAX_WEIGHT)).prop_map(int).boxed(),
        "max_conns" | "max_fails" => (0i128..2_000_000).prop_map(int).boxed(),
        "backup" => any::<bool>()
            .prop_map(|b| Field {
                json: b.to_string(),
                meaning: Meaning::Bool(b),
            })
            .boxed(),
        "fail_timeout" => (0u64..100_000_000, any::<u8>())
            .prop_map(move |(ms, f)| text(spell_time(ms, f)))
            .boxed(),
        _ => json_field().boxed(),
    };
    prop_oneof![3 => valid, 1 => json_field()].boxed()
}

fn fields(names: &'static [&'static str]) -> impl Strategy<Value = Vec<(String, Field)>> {
    vec(
        prop::sample::select(names.to_vec())
            .prop_flat_map(|k| field_for(k).prop_map(move |f| (k.to_string(), f))),
        0..4,
    )
}

/// What a PATCH body must give: the status of the refusal, or the patch.
fn patch_model(fields: &[(String, Field)], len: usize) -> Result<PeerPatch, u16> {
    if len > api::MAX_BODY {
        return Err(413);
    }
    let mut seen = HashSet::new();
    let mut patch = PeerPatch::default();
    for (k, f) in fields {
        if !seen.insert(k.as_str()) {
            return Err(400); // a duplicate field
        }
        match (k.as_str(), &f.meaning) {
            ("admin", Meaning::Null) => patch.admin = None,
            ("admin", Meaning::Str(s)) => {
                patch.admin = Some(match s.as_str() {
                    "up" => Admin::Up,
                    "drain" => Admin::Drain,
                    "down" => Admin::Down,
                    _ => return Err(400),
                })
            }
            ("weight", Meaning::Null) => patch.weight = Some(None),
            ("weight", Meaning::Int(n)) if (1..=i128::from(api::MAX_WEIGHT)).contains(n) => {
                patch.weight = Some(Some(*n as u32))
            }
            _ => return Err(400),
        }
    }
    if patch.admin.is_none() && patch.weight.is_none() {
        return Err(400);
    }
    Ok(patch)
}

/// An IPv4 or IPv6 address and a port (from `ports`).
fn socket_address(ports: std::ops::RangeInclusive<u16>) -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), ports.clone())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u16; 8]>(), ports)
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

/// A peer's address for POST, and the socket address it is if it is one the API takes.
fn address() -> impl Strategy<Value = (String, Option<SocketAddr>)> {
    prop_oneof![
        // As people write them (`[v6]:port`), port 0 now and then (refused).
        6 => socket_address(0..=u16::MAX).prop_map(|a| {
            let text = match a {
                SocketAddr::V4(v4) => v4.to_string(),
                SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
            };
            (text, (a.port() != 0).then_some(a))
        }),
        1 => prop::sample::select(vec![
            "backend.local:80",
            "10.0.0.7",
            "10.0.0.7:65536",
            "[::1]",
            "[fe80::1%2]:80",
            "::1:80",
            "",
            " 10.0.0.7:80",
        ])
        .prop_map(|s| (s.to_string(), None)),
    ]
}

/// What a POST body must give.
fn new_peer_model(
    addr: &(String, Option<SocketAddr>),
    fields: &[(String, Field)],
    len: usize,
) -> Result<api::NewPeer, u16> {
    if len > api::MAX_BODY {
        return Err(413);
    }
    let mut seen = HashSet::new();
    let mut p = api::NewPeer {
        address: addr.1.ok_or(400u16)?,
        weight: 1,
        backup: false,
        max_conns: 0,
        max_fails: 1,
        fail_timeout_ms: api::DEFAULT_FAIL_TIMEOUT_MS,
    };
    let u32_of = |m: &Meaning| match m {
        Meaning::Int(n) => u32::try_from(*n).ok(),
        _ => None,
    };
    for (k, f) in fields {
        if !seen.insert(k.as_str()) {
            return Err(400);
        }
        match k.as_str() {
            "weight" => p.weight = u32_of(&f.meaning).ok_or(400u16)?,
            "max_conns" => p.max_conns = u32_of(&f.meaning).ok_or(400u16)?,
            "max_fails" => p.max_fails = u32_of(&f.meaning).ok_or(400u16)?,
            "backup" => match f.meaning {
                Meaning::Bool(b) => p.backup = b,
                _ => return Err(400),
            },
            "fail_timeout" => match &f.meaning {
                Meaning::Null => {}
                Meaning::Str(s) => {
                    p.fail_timeout_ms = nginx_parse_time_ms(s.as_bytes())
                        .filter(|&ms| ms <= 365 * 24 * 3600 * 1000)
                        .ok_or(400u16)?
                }
                _ => return Err(400),
            },
            _ => return Err(400),
        }
    }
    if !(1..=api::MAX_WEIGHT).contains(&p.weight) || p.max_fails > api::MAX_FAILS {
        return Err(400);
    }
    Ok(p)
}

const API_METHODS: [api::Method; 6] = [
    api::Method::Get,
    api::Method::Head,
    api::Method::Patch,
    api::Method::Post,
    api::Method::Delete,
    api::Method::Other,
];

/// A path segment: the resource words, names, anything but a slash.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec!["upstreams", "peers", ""]).prop_map(String::from),
        2 => "[^/]{1,8}",
        1 => "[a-z0-9.:\\[\\]%]{1,10}",
    ]
}

proptest! {
    #![proptest_config(config(4096))]

    /// PATCH bodies: the model's patch or its refusal (413 over the size bound, 400 for a
    /// duplicate or unknown field, a wrong type, a weight out of range, nothing to change).
    #[test]
    fn api_patch_matches_its_model(fs in fields(&["admin", "weight", "admin", "weight", "colour"]), pad in prop_oneof![5 => 0usize..4, 1 => 4090usize..4100]) {
        let body = object(&fs, pad);
        let got = api::parse_patch(&body).map_err(|e| e.status);
        prop_assert_eq!(got, patch_model(&fs, body.len()), "{}", String::from_utf8_lossy(&body));
    }

    /// POST bodies: the model's peer or its refusal; an added peer's name is its address as
    /// nginx writes it, and reads back as the same address.
    #[test]
    fn api_new_peer_matches_its_model(
        addr in address(),
        fs in fields(&["weight", "max_conns", "max_fails", "backup", "fail_timeout", "colour"]),
        pad in prop_oneof![5 => 0usize..4, 1 => 4050usize..4100],
    ) {
        let mut all = vec![("address".to_string(), Field { json: format!("\"{}\"", addr.0), meaning: Meaning::Str(addr.0.clone()) })];
        all.extend(fs);
        let body = object(&all, pad);
        let got = api::parse_new_peer(&body);
        let want = new_peer_model(&addr, &all[1..], body.len());
        prop_assert_eq!(got.clone().map_err(|e| e.status), want, "{}", String::from_utf8_lossy(&body));
        if let Ok(p) = got {
            prop_assert_eq!(p.name().parse::<SocketAddr>().ok(), Some(p.address));
        }
    }

    /// Any request: a refusal is 400, 404, 405 or 413 with `Allow` exactly on 405; a read-only
    /// API never yields a change and never looks at the body; reads do not depend on the body
    /// or on write=.
    #[test]
    fn api_requests_are_safe(
        m in prop::sample::select(API_METHODS.to_vec()),
        path in prop_oneof![
            3 => (
                prop::sample::select(vec!["upstreams", "upstreams", "upstream"]),
                "[^/]{0,6}",
                prop::sample::select(vec!["peers", "peers", "peer"]),
                "[^/]{0,8}",
                1usize..=4,
                "/{0,2}",
                "/{0,2}",
            )
                .prop_map(|(u, name, p, addr, depth, lead, tail)| {
                    format!("{lead}{}{tail}", [u, &name, p, &addr][..depth].join("/")).into_bytes()
                }),
            1 => (vec(segment(), 0..6), "/{0,2}", "/{0,2}").prop_map(|(s, a, b)| format!("{a}{}{b}", s.join("/")).into_bytes()),
            1 => vec(any::<u8>(), 0..16),
        ],
        body in prop_oneof![
            Just(b"{\"admin\": \"drain\"}".to_vec()),
            Just(b"{\"address\": \"10.0.0.1:80\"}".to_vec()),
            vec(any::<u8>(), 0..16),
        ],
        write in any::<bool>(),
    ) {
        let got = api::parse(m, &path, write, &body);
        match &got {
            Err(e) => {
                prop_assert!([400, 404, 405, 413].contains(&e.status), "{:?}", e);
                prop_assert_eq!(e.allow.is_some(), e.status == 405, "{:?}", e);
            }
            Ok(op) if !write => prop_assert!(
                !matches!(op, Op::PatchPeer { .. } | Op::AddPeer { .. } | Op::DeletePeer { .. }),
                "{:?}", op
            ),
            Ok(_) => {}
        }
        if !write {
            prop_assert_eq!(&got, &api::parse(m, &path, false, b"not json"));
        }
        if matches!(m, api::Method::Get | api::Method::Head) {
            prop_assert_eq!(&got, &api::parse(m, &path, !write, b""));
        }
    }

    /// A resource path built from an upstream and a peer, with any slashes around: the
    /// operation each method asks for, with exactly those names.
    #[test]
    fn api_routes_carry_their_names(
        name in "[^/]{1,10}",
        addr in "[^/]{1,12}",
        depth in 0usize..4,
        m in prop::sample::select(API_METHODS.to_vec()),
        lead in "/{0,3}",
        tail in "/{0,3}",
    ) {
        let segs = ["upstreams", &name, "peers", &addr];
        let path = format!("{lead}{}{tail}", segs[..depth + 1].join("/"));
        let body = b"{\"admin\": \"down\"}";
        let got = api::parse(m, path.as_bytes(), true, body);
        let (u, a) = (name.clone(), addr.clone());
        use api::Method as M;
        let want: Result<Op, u16> = match (depth, m) {
            (0, M::Get | M::Head) => Ok(Op::ListUpstreams),
            (1, M::Get | M::Head) => Ok(Op::GetUpstream(u)),
            (2, M::Get | M::Head) => Ok(Op::ListPeers(u)),
            (3, M::Get | M::Head) => Ok(Op::GetPeer { upstream: u, address: a }),
            (3, M::Patch) => Ok(Op::PatchPeer {
                upstream: u,
                address: a,
                patch: PeerPatch { admin: Some(Admin::Down), weight: None },
            }),
            (3, M::Delete) => Ok(Op::DeletePeer { upstream: u, address: a }),
            (2, M::Post) => Err(400), // the body is not a new peer
            _ => Err(405),
        };
        prop_assert_eq!(got.map_err(|e| e.status), want, "{} {:?}", path, m);
    }
}

fn saved_peer() -> impl Strategy<Value = state::SavedPeer> {
    (
        any::<String>(),
        any::<String>(),
        prop::sample::select(vec![Admin::Up, Admin::Drain, Admin::Down]),
        prop::option::of(1..=api::MAX_WEIGHT),
        any::<u64>(),
        prop::sample::select(vec![state::Kind::Http, state::Kind::Stream]),
    )
        .prop_map(
            |(upstream, address, admin, weight, line, kind)| state::SavedPeer {
                upstream,
                kind,
                address,
                admin,
                weight,
                line,
            },
        )
}

fn saved_added() -> impl Strategy<Value = state::SavedAdded> {
    (
        any::<String>(),
        socket_address(1..=u16::MAX),
        1..=api::MAX_WEIGHT,
        any::<bool>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        prop::sample::select(vec![state::Kind::Http, state::Kind::Stream]),
    )
        .prop_map(
            |(upstream, a, weight, backup, max_conns, max_fails, fail_timeout_ms, kind)| {
                state::SavedAdded {
                    upstream,
                    kind,
                    address: api::canonical(&a),
                    weight,
                    backup,
                    max_conns,
                    max_fails,
                    fail_timeout_ms,
                }
            },
        )
}

proptest! {
    #![proptest_config(config(1024))]

    /// The lb_state file: what is written reads back the same; a file cut short anywhere is
    /// refused as not a state file; any bytes are refused or read without a panic.
    #[test]
    fn state_file_round_trips(
        peers in vec(saved_peer(), 0..4),
        added in vec(saved_added(), 0..4),
        cut in any::<Index>(),
        noise in vec(any::<u8>(), 0..32),
    ) {
        let text = state::render(peers.clone(), added.clone());
        let back = state::parse(&text).unwrap();
        prop_assert_eq!((back.version, back.peers, back.added), (state::VERSION, peers, added));
        // The JSON text without its final newline is the whole file; shorter is cut.
        let at = cut.index(text.len() - 1);
        prop_assert!(matches!(state::parse(&text[..at]), Err(state::StateError::Invalid(_))), "{}", at);
        let _ = state::parse(&noise);
    }
}

// ---------------------------------------------------------------------------------------------
// Balancing.

/// Weights, `down` peers (0) included: often tiny lists of 0, 1 and 2 (where edge cases such
/// as "as many schedule entries as peers" live), sometimes equal weights, else anything up to
/// `max`.
fn weights(max: u32, len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u32>> {
    let small = len.start.max(1)..len.end.min(len.start.max(1) + 8);
    prop_oneof![
        2 => vec(0u32..=2, small),
        1 => (1u32..=max, len.clone()).prop_map(|(w, n)| vec![w; n]),
        3 => vec(prop_oneof![1 => Just(0u32), 4 => 1u32..=max], len),
    ]
}

/// Checks that `seq` (picks in a row) is periodic with period `w` and that its first window
/// has `want[i]` picks of each peer `i`: then every window of `w` consecutive picks does.
fn check_windows(seq: &[usize], want: &[u32], w: usize) -> Result<(), TestCaseError> {
    prop_assert!(seq.len() >= 2 * w);
    let mut count = vec![0u32; want.len()];
    for &i in &seq[..w] {
        count[i] += 1;
    }
    prop_assert_eq!(&count, &want.to_vec(), "first window of {}", w);
    for k in 0..seq.len() - w {
        prop_assert_eq!(seq[k], seq[k + w], "windows at {} and {} differ", k, k + 1);
    }
    Ok(())
}

/// Picks a round-robin selector `n` times under a fixed usable set.
fn rr_picks(sel: &mut Selector, usable: impl Fn(usize) -> bool, n: usize) -> Vec<usize> {
    let Selector::RoundRobin(rr) = sel else {
        panic!("not round-robin");
    };
    (0..n).map_while(|_| rr.pick(&usable)).collect()
}

/// What the window property promises for `weights` with the peers `up` says are usable: a
/// window length and each peer's picks in it (weights divided by the gcd of all of them).
fn window_of(weights: &[u32], up: impl Fn(usize) -> bool) -> (usize, Vec<u32>) {
    let g = weights.iter().fold(0, |g, &w| gcd(g, w)).max(1);
    let want: Vec<u32> = (0..weights.len())
        .map(|i| if up(i) { weights[i] / g } else { 0 })
        .collect();
    (want.iter().sum::<u32>() as usize, want)
}

proptest! {
    #![proptest_config(config(1024))]

    /// Smooth WRR as a schedule (any list size): after any history of picks under changing
    /// usable sets, a fixed usable set gives each usable peer exactly its weight's share
    /// (weight / gcd) of every window of sum(usable weights) / gcd picks.
    #[test]
    fn smooth_wrr_schedule_window(
        weights in weights(12, 1..100),
        history in vec((any::<u64>(), 0u32..=256), 0..40),
        mask in (any::<u64>(), 0u32..=256),
    ) {
        let mut s = SmoothWrr::new(&weights);
        let g = weights.iter().fold(0, |g, &w| gcd(g, w));
        if g > 0 {
            prop_assert_eq!(s.period() as u32, weights.iter().map(|w| w / g).sum::<u32>());
        }
        for &h in &history {
            if let Some(i) = s.pick(|i| in_mask(h, i)) {
                prop_assert!(in_mask(h, i) && weights[i] > 0);
            }
        }
        let up = |i: usize| weights[i] > 0 && in_mask(mask, i);
        let (w, want) = window_of(&weights, up);
        let seq: Vec<usize> = (0..3 * w).map_while(|_| s.pick(|i| in_mask(mask, i))).collect();
        if w == 0 {
            prop_assert!(seq.is_empty() && s.pick(|i| in_mask(mask, i)).is_none());
        } else {
            check_windows(&seq, &want, w)?;
        }
    }

    /// nginx's walk (lists of up to 64 peers, through `Selector`): from the start, a fixed
    /// usable set gets the same window property; with every peer usable the walk and the
    /// schedule pick the very same sequence.
    #[test]
    fn smooth_wrr_walk_window(
        weights in weights(20, 1..65),
        mask in (any::<u64>(), 0u32..=256),
        seed in any::<u64>(),
    ) {
        let up = |i: usize| weights[i] > 0 && in_mask(mask, i);
        let (w, want) = window_of(&weights, up);
        let mut sel = Selector::new(Method::RoundRobin, &weights, seed);
        let seq = rr_picks(&mut sel, |i| in_mask(mask, i), 3 * w + 1);
        if w == 0 {
            prop_assert!(seq.is_empty());
        } else {
            check_windows(&seq, &want, w)?;
        }
        let total: u32 = weights.iter().sum();
        let mut walk = SmoothWrr::walk(&weights);
        let mut schedule = SmoothWrr::new(&weights);
        for k in 0..2 * total {
            prop_assert_eq!(walk.pick(|_| true), schedule.pick(|_| true), "pick {}", k);
        }
    }

    /// A list whose peers changed (some left, some joined, in any order), through
    /// `Selector::follow`: the new selector keeps the window property for the new weights,
    /// whether the schedule was edited or built anew.
    #[test]
    fn smooth_wrr_follow_window(
        g in 1u32..=3,
        old in vec(1u32..=4, 65..120),
        keep in vec(any::<bool>(), 120),
        joined in vec(1u32..=4, 0..10),
        changed in prop::option::of(any::<Index>()),
        history in vec((any::<u64>(), 0u32..=256), 0..30),
        order in any::<u64>(),
        mask in (any::<u64>(), 0u32..=256),
    ) {
        let old_w: Vec<u32> = old.iter().map(|w| w * g).collect();
        let mut sel = Selector::new(Method::RoundRobin, &old_w, 1);
        for &h in &history {
            rr_picks(&mut sel, |i| in_mask(h, i), 1);
        }
        // The new list: kept peers (rotated), then the ones that joined.
        let mut origin: Vec<Option<usize>> = (0..old_w.len()).filter(|&j| keep[j % keep.len()] || j % 7 == 0).map(Some).collect();
        let r = (order as usize) % origin.len();
        origin.rotate_left(r);
        let mut new_w: Vec<u32> = origin.iter().map(|o| old_w[o.unwrap_or(0)]).collect();
        for &w in &joined {
            origin.push(None);
            new_w.push(w * g);
        }
        if let Some(ix) = changed {
            // A kept peer's weight changed: no edit, a new schedule.
            let i = ix.index(new_w.len());
            new_w[i] = new_w[i] % (4 * g) + g;
        }
        if let Selector::RoundRobin(rr) = &sel {
            if let Some(edited) = rr.edit(&origin, &old_w, &new_w) {
                let ng = new_w.iter().fold(0, |a, &w| gcd(a, w));
                prop_assert_eq!(edited.period() as u32, new_w.iter().map(|w| w / ng).sum::<u32>());
            }
        }
        let mut next = sel.follow(Method::RoundRobin, &origin, &old_w, &new_w, 2);
        let up = |i: usize| in_mask(mask, i);
        let (w, want) = window_of(&new_w, up);
        let seq = rr_picks(&mut next, up, 3 * w);
        if w == 0 {
            prop_assert!(seq.is_empty());
        } else {
            check_windows(&seq, &want, w)?;
        }
    }

    /// No method ever picks a peer that may not take the request (weight 0, or not usable
    /// for this pick), whatever the usable sets from one pick to the next; round-robin and
    /// p2c find a usable peer whenever there is one.
    #[test]
    fn no_method_picks_an_unusable_peer(
        weights in weights(6, 1..90),
        masks in vec((any::<u64>(), 0u32..=256), 1..40),
        loads in vec(any::<u32>(), 90),
        seed in any::<u64>(),
    ) {
        let n = weights.len();
        for method in [Method::RoundRobin, Method::LeastConn, Method::P2c] {
            let mut sel = Selector::new(method, &weights, seed);
            let mut active = vec![0u32; n];
            for (k, &m) in masks.iter().enumerate() {
                let usable = |i: usize| in_mask(m, i);
                let any_usable = (0..n).any(|i| weights[i] > 0 && usable(i));
                let got = match &mut sel {
                    Selector::RoundRobin(rr) => rr.pick(usable),
                    Selector::P2c(p) => p.pick(usable, |a, b| loads[a] < loads[b]),
                    Selector::LeastConn(lc) => lc.pick(
                        |i| active[i],
                        |i| match (usable(i), mix(m.0 ^ 0x55, i) & 1) {
                            (true, _) => Fit::Yes,
                            (false, 0) => Fit::NotNow,
                            (false, _) => Fit::Unavailable,
                        },
                        k as u64 * 30,
                    ),
                };
                match got {
                    Some(i) => {
                        prop_assert!(i < n && weights[i] > 0 && usable(i), "{:?} picked {} at pick {}", method, i, k);
                        if let Selector::LeastConn(lc) = &mut sel {
                            active[i] += 1;
                            lc.set_active(i, active[i]);
                        }
                    }
                    // least_conn may have set a peer aside until its next rebuild.
                    None if method != Method::LeastConn => prop_assert!(!any_usable, "{:?} found none at pick {}", method, k),
                    None => {}
                }
            }
        }
    }
}

/// What happens to a least_conn upstream between picks.
#[derive(Debug, Clone)]
enum LcOp {
    /// This worker picks; bits of the value say which peers this request already tried.
    Pick(u64),
    /// One of this worker's connections ends.
    Done(Index),
    /// Another worker opens a connection to a peer (not seen until read).
    Opened(Index),
    /// Other workers' connections to a peer become `n`, then time passes (a rebuild is due).
    Moved(Index, u32),
}

fn lc_op() -> impl Strategy<Value = LcOp> {
    prop_oneof![
        5 => any::<u64>().prop_map(LcOp::Pick),
        3 => any::<Index>().prop_map(LcOp::Done),
        1 => any::<Index>().prop_map(LcOp::Opened),
        1 => (any::<Index>(), 0u32..6).prop_map(|(i, n)| LcOp::Moved(i, n)),
    ]
}

proptest! {
    #![proptest_config(config(1024))]

    /// least_conn picks a peer with the fewest active connections relative to its weight
    /// among those that may take the request (not dead, not tried, weight > 0), counting
    /// every worker's connections, and finds one whenever there is one.
    #[test]
    fn least_conn_picks_a_least_loaded_peer(
        weights in weights(8, 1..24),
        dead in vec(prop_oneof![5 => Just(false), 1 => Just(true)], 24),
        ops in vec(lc_op(), 1..120),
    ) {
        let n = weights.len();
        let mut sel = Selector::new(Method::LeastConn, &weights, 0);
        let Selector::LeastConn(lc) = &mut sel else { unreachable!() };
        let mut mine: Vec<usize> = Vec::new();
        let mut others = vec![0u32; n];
        let mut now = 0u64;
        let active = |mine: &[usize], others: &[u32], i: usize| {
            others[i] + mine.iter().filter(|&&j| j == i).count() as u32
        };
        for op in ops {
            match op {
                LcOp::Pick(tried) => {
                    let tried = |i: usize| n > 1 && mix(tried, i) % 4 == 0;
                    let eligible = |i: usize| weights[i] > 0 && !dead[i] && !tried(i);
                    let counts: Vec<u32> = (0..n).map(|i| active(&mine, &others, i)).collect();
                    let got = lc.pick(
                        |i| counts[i],
                        |i| if dead[i] { Fit::Unavailable } else if tried(i) { Fit::NotNow } else { Fit::Yes },
                        now,
                    );
                    match got {
                        Some(i) => {
                            prop_assert!(eligible(i), "picked {} which may not take it", i);
                            for j in (0..n).filter(|&j| eligible(j)) {
                                prop_assert!(
                                    u64::from(counts[i]) * u64::from(weights[j]) <= u64::from(counts[j]) * u64::from(weights[i]),
                                    "picked {} ({}/{}) over {} ({}/{})", i, counts[i], weights[i], j, counts[j], weights[j]
                                );
                            }
                            mine.push(i);
                            lc.set_active(i, active(&mine, &others, i));
                        }
                        None => prop_assert!(!(0..n).any(eligible), "none picked though one may take it"),
                    }
                }
                LcOp::Done(ix) if !mine.is_empty() => {
                    let i = mine.swap_remove(ix.index(mine.len()));
                    lc.set_active(i, active(&mine, &others, i));
                }
                LcOp::Done(_) => {}
                LcOp::Opened(ix) => others[ix.index(n)] += 1,
                LcOp::Moved(ix, c) => {
                    others[ix.index(n)] = c;
                    now += 100;
                }
            }
        }
    }

    /// p2c, every peer usable: the strictly most loaded peer is never chosen when there are
    /// two or more to choose from (both draws are distinct), and weight 0 never is.
    #[test]
    fn p2c_never_picks_the_most_loaded(
        some in vec(prop_oneof![1 => Just(0u32), 4 => 1u32..=100], 0..38),
        two in [1u32..=100, 1u32..=100],
        at in [any::<Index>(), any::<Index>()],
        loads in vec(0u32..50, 40),
        seed in any::<u64>(),
    ) {
        // At least two peers with a weight, anywhere in the list.
        let mut weights = some;
        weights.insert(at[0].index(weights.len() + 1), two[0]);
        weights.insert(at[1].index(weights.len() + 1), two[1]);
        let n = weights.len();
        let positive: Vec<usize> = (0..n).filter(|&i| weights[i] > 0).collect();
        let max = positive.iter().map(|&i| loads[i]).max().unwrap_or(0);
        let worst: Vec<usize> = positive.iter().copied().filter(|&i| loads[i] == max).collect();
        let mut sel = Selector::new(Method::P2c, &weights, seed);
        let Selector::P2c(p) = &mut sel else { unreachable!() };
        for k in 0..200 {
            let i = p.pick(|_| true, |a, b| loads[a] < loads[b]);
            prop_assert!(i.is_some_and(|i| weights[i] > 0), "pick {}: {:?}", k, i);
            if worst.len() == 1 {
                prop_assert_ne!(i, Some(worst[0]), "pick {}", k);
            }
        }
    }

    /// The pieces of p2c's comparison: a strict order (never less than itself, never both
    /// ways); the moving average stays between the old value and the sample; fading only
    /// lowers.
    #[test]
    fn p2c_scores_and_averages(
        a in (0u32..1000, prop::option::of(0u64..1 << 40)),
        b in (0u32..1000, prop::option::of(0u64..1 << 40)),
        old in prop::option::of(0u64..1 << 34),
        sample in 0u64..1 << 34,
        dt in 0u64..1 << 30,
        decay in 0u64..1 << 30,
    ) {
        prop_assert!(!p2c::score_less(a, a));
        prop_assert!(!(p2c::score_less(a, b) && p2c::score_less(b, a)));
        let v = p2c::ewma(old, sample, dt, decay);
        let o = old.unwrap_or(sample);
        prop_assert!(o.min(sample) <= v && v <= o.max(sample), "{} not between {} and {}", v, o, sample);
        prop_assert!(p2c::faded(sample, dt, decay) <= sample);
    }

    /// nginx's passive rules: a peer may be picked exactly when it is healthy, below
    /// max_conns (if any), and has fewer than max_fails failures (if counted) or its
    /// fail_timeout has passed since the last one.
    #[test]
    fn availability_matches_nginx_rules(
        max_fails in 0u32..4,
        fail_timeout_ms in 0u64..20_000,
        max_conns in 0u32..4,
        healthy in any::<bool>(),
        fails in 0u32..6,
        checked_ms in 0u64..50_000,
        active in 0u32..6,
        now_ms in 0u64..50_000,
    ) {
        let limits = availability::Limits { max_fails, fail_timeout_ms, max_conns };
        let v = availability::judge(&limits, healthy, fails, checked_ms, active, now_ms);
        let below_conns = max_conns == 0 || active < max_conns;
        let failed = max_fails > 0 && fails >= max_fails;
        let timed_out = now_ms.saturating_sub(checked_ms) > fail_timeout_ms;
        prop_assert_eq!(v.can_pick(), healthy && below_conns && (!failed || timed_out), "{:?}", v);
        prop_assert_eq!(v == Verdict::Probe, healthy && below_conns && failed && timed_out, "{:?}", v);
    }
}

proptest! {
    #![proptest_config(heavy(24))]

    /// Large upstreams (past nginx's exact walk: stride scheduling): the same window
    /// property, for a fixed usable set.
    #[test]
    fn smooth_wrr_stride_window(
        weights in vec(1u32..=3, 2100..2600),
        mask in (any::<u64>(), 128u32..=256),
        start in 0usize..5000,
    ) {
        let mut sel = Selector::new(Method::RoundRobin, &weights, 0);
        rr_picks(&mut sel, |_| true, start);
        let up = |i: usize| in_mask(mask, i);
        let (w, want) = window_of(&weights, up);
        let seq = rr_picks(&mut sel, up, 2 * w + 1);
        check_windows(&seq, &want, w)?;
    }
}
