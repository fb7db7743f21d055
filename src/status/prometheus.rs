//! The Prometheus text exposition format (version 0.0.4): metric names prefixed `nginx_lb_`,
//! counters ending in `_total`, labels `upstream`, `kind` (`http` or `stream`) and `peer` (the
//! peer's address).
//!
//! Samples are grouped by family, as the format wants: a family's lines for every peer, then
//! the next family's. A streamed rendering (`Stream`) therefore goes over the peers once per
//! family, a slice at a time, after one pass over their addresses that finds the addresses
//! given twice (their labels get `#2`, `#3`, ...).

use std::collections::hash_map::{DefaultHasher, Entry, HashMap};
use std::hash::{Hash, Hasher};
use std::io::Write;

use super::snapshot::{PeerSnapshot, PeerState, Snapshot};
use super::stream::{Budget, Meter, Render, Source, BATCH};

/// A label value with `\`, `"` and newlines escaped.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    escape_into(&mut out, v);
    out
}

/// `escape(v)` appended to `out`.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

type Value = fn(&PeerSnapshot) -> Option<f64>;

/// The `peer` label of each peer of an upstream: its address, and for a second (third, ...)
/// `server` line with the same address, the address with `#2` (`#3`, ...), so that every
/// series stays unique (nginx counts each line's peer on its own, and so do we).
pub fn peer_labels(peers: &[PeerSnapshot]) -> Vec<String> {
    let mut seen: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    peers
        .iter()
        .map(|p| {
            let n = seen.entry(p.address.as_str()).or_insert(0);
            *n += 1;
            if *n == 1 {
                escape(&p.address)
            } else {
                escape(&format!("{}#{n}", p.address))
            }
        })
        .collect()
}

/// The families with at most one sample per peer: name, type, help, the peer's value (no
/// sample without one; no `# HELP` and `# TYPE` lines for a family without samples).
static SIMPLE: [(&str, &str, &str, Value); 15] = [
    (
        "peer_up",
        "gauge",
        "1 if the peer can be chosen now, else 0.",
        |p| Some(f64::from(u8::from(p.state == PeerState::Up))),
    ),
    ("peer_weight", "gauge", "Configured weight.", |p| {
        Some(f64::from(p.weight))
    }),
    ("peer_backup", "gauge", "1 for a backup peer.", |p| {
        Some(f64::from(u8::from(p.backup)))
    }),
    (
        "peer_resolved",
        "gauge",
        "1 for a peer whose address came from a resolved name.",
        |p| Some(f64::from(u8::from(p.resolved))),
    ),
    (
        "peer_active",
        "gauge",
        "Connections to the peer in progress, all workers.",
        |p| Some(p.active as f64),
    ),
    (
        "peer_requests_total",
        "counter",
        "Requests sent to the peer (each attempt).",
        |p| Some(p.requests as f64),
    ),
    ("peer_fails_total", "counter", "Passive failures.", |p| {
        Some(p.fails as f64)
    }),
    (
        "peer_unavail_total",
        "counter",
        "Times passive failures made the peer unavailable.",
        |p| Some(p.unavail as f64),
    ),
    (
        "peer_ejections_total",
        "counter",
        "Times outlier detection (lb_outlier) ejected the peer.",
        |p| Some(p.ejections as f64),
    ),
    (
        "peer_response_time_average_seconds",
        "gauge",
        "Moving average of the response time (what p2c compares).",
        |p| p.response_time_ms.map(|ms| ms / 1000.0),
    ),
    (
        "peer_health_checks_total",
        "counter",
        "Health probes finished.",
        |p| p.health_checks.as_ref().map(|h| h.checks as f64),
    ),
    (
        "peer_health_check_fails_total",
        "counter",
        "Health probes that failed.",
        |p| p.health_checks.as_ref().map(|h| h.fails as f64),
    ),
    (
        "peer_unhealthy_total",
        "counter",
        "Times health checks took the peer down.",
        |p| p.health_checks.as_ref().map(|h| h.unhealthy as f64),
    ),
    (
        "peer_health_last_passed",
        "gauge",
        "1 if the last health probe passed, 0 if it failed.",
        |p| {
            p.health_checks
                .as_ref()
                .and_then(|h| h.last_passed)
                .map(|b| f64::from(u8::from(b)))
        },
    ),
    (
        "peer_downtime_seconds_total",
        "counter",
        "Time spent down by health checks.",
        |p| p.health_checks.as_ref().map(|h| h.downtime as f64 / 1000.0),
    ),
];

/// The families after `SIMPLE`'s, in the order written.
const RESPONSES: usize = SIMPLE.len();
const PANIC: usize = RESPONSES + 1;
const HISTOGRAM: usize = RESPONSES + 2;
const STATE: usize = RESPONSES + 3;
const FAMILIES: usize = RESPONSES + 4;

pub fn render(s: &Snapshot) -> Vec<u8> {
    Render::Prometheus(Stream::new()).all(s)
}

/// Addresses looked at per peer of the budget in the pass over addresses.
const ADDRESSES_PER_PEER: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The pass over the addresses of upstream `u`, from peer `i`.
    Labels {
        u: usize,
        i: usize,
    },
    /// Family `f`, upstream `u`, from peer `i`; `open`: its `# HELP` and `# TYPE` are written.
    Family {
        f: usize,
        u: usize,
        i: usize,
        open: bool,
    },
    Done,
}

/// A Prometheus rendering in progress.
pub struct Stream {
    step: Step,
    /// Each upstream's labels, escaped: `upstream="NAME",kind="http"`.
    names: Vec<String>,
    /// Each upstream's peers whose address an earlier peer has too: (index, occurrence), by
    /// index.
    repeats: Vec<Vec<(usize, u32)>>,
    /// The addresses seen in the pass over upstream's addresses (cleared after each).
    seen: Seen,
    scratch: Vec<PeerSnapshot>,
}

impl Default for Stream {
    fn default() -> Self {
        Stream::new()
    }
}

/// Addresses already seen in one upstream, to number repeated ones: by a hash of the
/// address, the first peer with it and how many had it; addresses whose hash another
/// address has already are kept whole (`other`).
#[derive(Default)]
struct Seen {
    by_hash: HashMap<u64, (usize, u32)>,
    other: Vec<(String, u32)>,
}

impl Seen {
    /// Counts peer `i`'s address `a`: the how-manieth peer with it this is.
    fn note<S: Source + ?Sized>(&mut self, src: &S, u: usize, i: usize, a: &str) -> u32 {
        let mut h = DefaultHasher::new();
        a.hash(&mut h);
        match self.by_hash.entry(h.finish()) {
            Entry::Vacant(e) => {
                e.insert((i, 1));
                1
            }
            Entry::Occupied(mut e) => {
                let (first, n) = e.get_mut();
                if src.address(u, *first) == a {
                    *n += 1;
                    *n
                } else {
                    match self.other.iter_mut().find(|(s, _)| s == a) {
                        Some((_, n)) => {
                            *n += 1;
                            *n
                        }
                        None => {
                            self.other.push((a.to_string(), 1));
                            1
                        }
                    }
                }
            }
        }
    }
}

impl Stream {
    pub fn new() -> Stream {
        Stream {
            step: Step::Labels { u: 0, i: 0 },
            names: Vec::new(),
            repeats: Vec::new(),
            seen: Seen::default(),
            scratch: Vec::new(),
        }
    }

    /// Peer `i`'s `peer` label (`peer_labels`), in `out`.
    fn label(&self, u: usize, i: usize, address: &str, out: &mut String) {
        out.clear();
        match self.repeats[u].binary_search_by_key(&i, |r| r.0) {
            Ok(k) => escape_into(out, &format!("{address}#{}", self.repeats[u][k].1)),
            Err(_) => escape_into(out, address),
        }
    }

    /// See `stream::Render::fill`.
    pub fn fill<S: Source + ?Sized>(&mut self, src: &S, out: &mut Vec<u8>, b: Budget) -> bool {
        let mut m = Meter::new(out, b);
        let count = src.upstreams();
        while self.step != Step::Done && !m.spent(out) {
            self.step = match self.step {
                Step::Labels { u, .. } if u == count => {
                    self.seen = Seen::default();
                    Step::Family {
                        f: 0,
                        u: 0,
                        i: 0,
                        open: false,
                    }
                }
                Step::Labels { u, i } => {
                    if self.names.len() == u {
                        let head = src.head(u);
                        self.names.push(format!(
                            "upstream=\"{}\",kind=\"{}\"",
                            escape(&head.name),
                            escape(&head.kind)
                        ));
                        self.repeats.push(Vec::new());
                        self.seen.by_hash.clear();
                        self.seen.other.clear();
                    }
                    let n = src.peer_count(u);
                    if i == n {
                        Step::Labels { u: u + 1, i: 0 }
                    } else {
                        let k = m.take_light(n - i, ADDRESSES_PER_PEER);
                        for j in i..i + k {
                            let a = src.address(u, j);
                            let nth = self.seen.note(src, u, j, &a);
                            if nth > 1 {
                                self.repeats[u].push((j, nth));
                            }
                        }
                        Step::Labels { u, i: i + k }
                    }
                }
                Step::Family { f, .. } if f == FAMILIES => Step::Done,
                Step::Family { f, u, open, .. } if u == count => {
                    if !open && (f == RESPONSES || f == HISTOGRAM || f == STATE) {
                        // Written even without samples.
                        self.open(out, f);
                    }
                    Step::Family {
                        f: f + 1,
                        u: 0,
                        i: 0,
                        open: false,
                    }
                }
                Step::Family { f, u, i, mut open } => {
                    if !open && (f == RESPONSES || f == HISTOGRAM || f == STATE) {
                        self.open(out, f);
                        open = true;
                    }
                    if f == PANIC {
                        m.take(1, 1);
                        if let Some(p) = src.head(u).panic {
                            if !open {
                                self.open(out, f);
                                open = true;
                            }
                            let _ = writeln!(
                                out,
                                "nginx_lb_upstream_panic{{{}}} {}",
                                self.names[u],
                                u8::from(p)
                            );
                        }
                        Step::Family {
                            f,
                            u: u + 1,
                            i: 0,
                            open,
                        }
                    } else {
                        let n = src.peer_count(u);
                        if i == n {
                            Step::Family {
                                f,
                                u: u + 1,
                                i: 0,
                                open,
                            }
                        } else {
                            let k = m.take(n - i, BATCH);
                            let mut peers = core::mem::take(&mut self.scratch);
                            src.peers(u, i..i + k, &mut peers);
                            let mut label = String::new();
                            for (j, p) in peers.iter().enumerate() {
                                self.label(u, i + j, &p.address, &mut label);
                                open = self.sample(out, f, open, u, &label, p);
                            }
                            self.scratch = peers;
                            Step::Family {
                                f,
                                u,
                                i: i + k,
                                open,
                            }
                        }
                    }
                }
                Step::Done => Step::Done,
            };
        }
        self.step == Step::Done
    }

    /// Family `f`'s `# HELP` and `# TYPE` lines.
    fn open(&self, out: &mut Vec<u8>, f: usize) {
        let (name, kind, help) = match f {
            RESPONSES => (
                "peer_responses_total",
                "counter",
                "Responses by status class.",
            ),
            PANIC => (
                "upstream_panic",
                "gauge",
                "1 while the upstream is in panic mode (lb_panic).",
            ),
            HISTOGRAM => (
                "peer_response_time_seconds",
                "histogram",
                "Response times (from the request sent to the response header).",
            ),
            STATE => ("peer_state", "gauge", "1 for the peer's current state."),
            f => (SIMPLE[f].0, SIMPLE[f].1, SIMPLE[f].2),
        };
        let _ = writeln!(out, "# HELP nginx_lb_{name} {help}");
        let _ = writeln!(out, "# TYPE nginx_lb_{name} {kind}");
    }

    /// Peer `p`'s samples of family `f` (opening the family first if it is not yet); whether
    /// the family is open now.
    fn sample(
        &self,
        out: &mut Vec<u8>,
        f: usize,
        open: bool,
        u: usize,
        label: &str,
        p: &PeerSnapshot,
    ) -> bool {
        let upstream = &self.names[u];
        match f {
            RESPONSES => {
                for (class, n) in p.responses.classes() {
                    let _ = writeln!(
                        out,
                        "nginx_lb_peer_responses_total{{{upstream},peer=\"{label}\",code=\"{class}\"}} {n}",
                    );
                }
            }
            HISTOGRAM => {
                let h = &p.response_time_histogram;
                let labels = format!("{upstream},peer=\"{label}\"");
                for (i, n) in h.counts.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "nginx_lb_peer_response_time_seconds_bucket{{{labels},le=\"{}\"}} {n}",
                        super::histogram::le(i)
                    );
                }
                let _ = writeln!(
                    out,
                    "nginx_lb_peer_response_time_seconds_sum{{{labels}}} {}",
                    number(h.sum)
                );
                let _ = writeln!(
                    out,
                    "nginx_lb_peer_response_time_seconds_count{{{labels}}} {}",
                    h.count
                );
            }
            STATE => {
                for st in PeerState::ALL {
                    let _ = writeln!(
                        out,
                        "nginx_lb_peer_state{{{upstream},peer=\"{label}\",state=\"{}\"}} {}",
                        st.name(),
                        u8::from(p.state == st)
                    );
                }
            }
            f => {
                let (name, _, _, value) = SIMPLE[f];
                if let Some(v) = value(p) {
                    if !open {
                        self.open(out, f);
                    }
                    let _ = writeln!(
                        out,
                        "nginx_lb_{name}{{{upstream},peer=\"{label}\"}} {}",
                        number(v)
                    );
                    return true;
                }
            }
        }
        open
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::snapshot::tests::sample;

    /// The rendering as it was written before it was streamed: what the output must stay.
    fn reference(s: &Snapshot) -> Vec<u8> {
        use core::fmt::Write;
        let simple = &SIMPLE[..];

        let mut out = String::new();
        for (name, kind, help, value) in simple {
            let mut body = String::new();
            for u in &s.upstreams {
                for (p, label) in u.peers.iter().zip(peer_labels(&u.peers)) {
                    if let Some(v) = value(p) {
                        let _ = writeln!(
                            body,
                            "nginx_lb_{name}{{upstream=\"{}\",kind=\"{}\",peer=\"{label}\"}} {}",
                            escape(&u.name),
                            escape(&u.kind),
                            number(v)
                        );
                    }
                }
            }
            if !body.is_empty() {
                let _ = writeln!(out, "# HELP nginx_lb_{name} {help}");
                let _ = writeln!(out, "# TYPE nginx_lb_{name} {kind}");
                out.push_str(&body);
            }
        }
        // Labelled families: responses by class, state one-hot.
        let _ = writeln!(
            out,
            "# HELP nginx_lb_peer_responses_total Responses by status class."
        );
        let _ = writeln!(out, "# TYPE nginx_lb_peer_responses_total counter");
        for u in &s.upstreams {
            for (p, label) in u.peers.iter().zip(peer_labels(&u.peers)) {
                for (class, n) in p.responses.classes() {
                    let _ = writeln!(
                        out,
                        "nginx_lb_peer_responses_total{{upstream=\"{}\",kind=\"{}\",peer=\"{label}\",code=\"{class}\"}} {n}",
                        escape(&u.name),
                        escape(&u.kind),
                    );
                }
            }
        }
        let panics: Vec<_> = s
            .upstreams
            .iter()
            .filter_map(|u| u.panic.map(|p| (u, p)))
            .collect();
        if !panics.is_empty() {
            let _ = writeln!(
                out,
                "# HELP nginx_lb_upstream_panic 1 while the upstream is in panic mode (lb_panic)."
            );
            let _ = writeln!(out, "# TYPE nginx_lb_upstream_panic gauge");
            for (u, p) in panics {
                let _ = writeln!(
                    out,
                    "nginx_lb_upstream_panic{{upstream=\"{}\",kind=\"{}\"}} {}",
                    escape(&u.name),
                    escape(&u.kind),
                    u8::from(p)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP nginx_lb_peer_response_time_seconds Response times (from the request sent to \
             the response header)."
        );
        let _ = writeln!(out, "# TYPE nginx_lb_peer_response_time_seconds histogram");
        for u in &s.upstreams {
            for (p, label) in u.peers.iter().zip(peer_labels(&u.peers)) {
                let h = &p.response_time_histogram;
                let labels = format!(
                    "upstream=\"{}\",kind=\"{}\",peer=\"{label}\"",
                    escape(&u.name),
                    escape(&u.kind)
                );
                for (i, n) in h.counts.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "nginx_lb_peer_response_time_seconds_bucket{{{labels},le=\"{}\"}} {n}",
                        crate::status::histogram::le(i)
                    );
                }
                let _ = writeln!(
                    out,
                    "nginx_lb_peer_response_time_seconds_sum{{{labels}}} {}",
                    number(h.sum)
                );
                let _ = writeln!(
                    out,
                    "nginx_lb_peer_response_time_seconds_count{{{labels}}} {}",
                    h.count
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP nginx_lb_peer_state 1 for the peer's current state."
        );
        let _ = writeln!(out, "# TYPE nginx_lb_peer_state gauge");
        for u in &s.upstreams {
            for (p, label) in u.peers.iter().zip(peer_labels(&u.peers)) {
                for st in PeerState::ALL {
                    let _ = writeln!(
                        out,
                        "nginx_lb_peer_state{{upstream=\"{}\",kind=\"{}\",peer=\"{label}\",state=\"{}\"}} {}",
                        escape(&u.name),
                        escape(&u.kind),
                        st.name(),
                        u8::from(p.state == st)
                    );
                }
            }
        }
        out.into_bytes()
    }

    #[test]
    fn streamed_is_the_reference_rendering() {
        use crate::status::stream::tests::{budgets, shapes, sliced};
        for snap in shapes() {
            let want = reference(&snap);
            assert_eq!(render(&snap), want);
            for b in budgets() {
                let got = sliced(|| Render::Prometheus(Stream::new()), &snap, b);
                assert!(
                    got == want,
                    "{b:?}:\n{}\n---\n{}",
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want)
                );
            }
        }
    }

    #[test]
    fn labels_of_addresses_with_the_same_hash() {
        // Two addresses whose hashes collide are told apart by their bytes.
        let mut seen = Seen::default();
        let mut snap = sample();
        snap.upstreams[0].peers[1].address = "b".into();
        snap.upstreams[0].peers[0].address = "a".into();
        let mut h = DefaultHasher::new();
        "b".hash(&mut h);
        seen.by_hash.insert(h.finish(), (0, 1));
        assert_eq!(seen.note(&snap, 0, 1, "b"), 1);
        assert_eq!(seen.note(&snap, 0, 2, "b"), 2);
        assert_eq!(seen.note(&snap, 0, 3, "a"), 1);
    }

    #[test]
    fn duplicate_addresses_get_series_of_their_own() {
        let mut snap = sample();
        let twin = snap.upstreams[1].peers[0].clone();
        snap.upstreams[1].peers.push(twin.clone());
        snap.upstreams[1].peers.push(twin);
        let out = String::from_utf8(render(&snap)).unwrap();
        let series: Vec<&str> = out
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit_once(' ').unwrap().0)
            .collect();
        let unique: std::collections::HashSet<&&str> = series.iter().collect();
        assert_eq!(unique.len(), series.len(), "a series appears twice");
        assert!(out.contains(
            "peer_weight{upstream=\"<plain>\",kind=\"stream\",peer=\"10.0.0.1:80#3\"} 2\n"
        ));
    }

    #[test]
    fn shape() {
        let out = String::from_utf8(render(&sample())).unwrap();
        assert!(out.contains("# TYPE nginx_lb_peer_requests_total counter\n"));
        assert!(out.contains(
            "nginx_lb_peer_requests_total{upstream=\"back\\\"end\\\\1\",kind=\"http\",peer=\"127.0.0.1:8081\"} 10\n"
        ));
        assert!(out.contains(
            "nginx_lb_peer_responses_total{upstream=\"<plain>\",kind=\"stream\",peer=\"10.0.0.1:80\",code=\"5xx\"} 2\n"
        ));
        assert!(out.contains(
            "nginx_lb_peer_state{upstream=\"<plain>\",kind=\"stream\",peer=\"10.0.0.1:80\",state=\"down\"} 1\n"
        ));
        assert!(out.contains("nginx_lb_peer_response_time_average_seconds{upstream=\"<plain>\",kind=\"stream\",peer=\"10.0.0.1:80\"} 0.0015\n"));
        // The histogram: cumulative buckets, +Inf equal to _count, the sum in seconds.
        let series = "upstream=\"<plain>\",kind=\"stream\",peer=\"10.0.0.1:80\"";
        for (le, n) in [("0.005", 9), ("0.01", 9), ("10", 9), ("+Inf", 10)] {
            let line =
                format!("nginx_lb_peer_response_time_seconds_bucket{{{series},le=\"{le}\"}} {n}\n");
            assert!(out.contains(&line), "{line}");
        }
        assert!(out.contains(&format!(
            "nginx_lb_peer_response_time_seconds_count{{{series}}} 10\n"
        )));
        assert!(out.contains(&format!(
            "nginx_lb_peer_response_time_seconds_sum{{{series}}} 12.345\n"
        )));
        assert!(out.contains("# TYPE nginx_lb_peer_response_time_seconds histogram\n"));
        assert!(out.contains(
            "nginx_lb_peer_ejections_total{upstream=\"<plain>\",kind=\"stream\",peer=\"10.0.0.1:80\"} 3\n"
        ));
        assert!(out.contains(
            "nginx_lb_peer_state{upstream=\"<plain>\",kind=\"stream\",peer=\"10.0.0.1:80\",state=\"ejected\"} 0\n"
        ));
        assert!(out
            .contains("nginx_lb_upstream_panic{upstream=\"back\\\"end\\\\1\",kind=\"http\"} 1\n"));
        assert!(!out.contains("nginx_lb_upstream_panic{upstream=\"<plain>\",kind=\"stream\"}"));
        // Every sample line belongs to a family announced by # TYPE.
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split('{').next().unwrap();
            let histogram = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|base| out.contains(&format!("# TYPE {base} histogram")));
            let family = histogram.unwrap_or(name);
            assert!(out.contains(&format!("# TYPE {family} ")), "{line}");
        }
        // No health metrics for peers without checks.
        assert!(!out.contains("nginx_lb_peer_health_checks_total{upstream=\"<plain>\""));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
