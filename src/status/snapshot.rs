//! A copy of the module's state at one moment: upstream and peer configuration plus the shared
//! counters, as plain values the renderers can format.

use serde::Serialize;

use crate::balance::Verdict;

/// A peer's state as the status page names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Can be chosen.
    Up,
    /// `down` in the configuration.
    Down,
    /// Out after passive failures (`max_fails` within `fail_timeout`).
    Unavailable,
    /// Out because active health checks failed.
    Unhealthy,
    /// Health checks configured, no result yet.
    Checking,
    /// Drained by an operator (`lb_api`): no new requests, those in flight finish.
    Draining,
    /// Ejected for a while by outlier detection (`lb_outlier`).
    Ejected,
}

impl PeerState {
    pub const ALL: [PeerState; 7] = [
        PeerState::Up,
        PeerState::Down,
        PeerState::Unavailable,
        PeerState::Unhealthy,
        PeerState::Checking,
        PeerState::Draining,
        PeerState::Ejected,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PeerState::Up => "up",
            PeerState::Down => "down",
            PeerState::Unavailable => "unavailable",
            PeerState::Unhealthy => "unhealthy",
            PeerState::Checking => "checking",
            PeerState::Draining => "draining",
            PeerState::Ejected => "ejected",
        }
    }

    /// The state once the operator's `admin` state is taken into account: `down` shows as
    /// down, `drain` as draining, `up` leaves `self`.
    pub fn with_admin(self, admin: crate::api::Admin) -> Self {
        match admin {
            crate::api::Admin::Up => self,
            crate::api::Admin::Drain => PeerState::Draining,
            crate::api::Admin::Down => PeerState::Down,
        }
    }

    /// Derives the state from the configuration, the health word and the balancer's verdict.
    /// Configured `down` wins, then failed health checks, then "no check result yet", then
    /// passive failures. A peer only at `max_conns` is still `up`.
    pub fn derive(configured_down: bool, checked: bool, checking: bool, verdict: Verdict) -> Self {
        if configured_down {
            PeerState::Down
        } else if verdict == Verdict::Withdrawn {
            // The caller tells drain from down by the record's admin state (`with_admin`).
            PeerState::Draining
        } else if verdict == Verdict::Unhealthy {
            PeerState::Unhealthy
        } else if checked && checking {
            PeerState::Checking
        } else if verdict == Verdict::Ejected {
            PeerState::Ejected
        } else if verdict == Verdict::Failed {
            PeerState::Unavailable
        } else {
            PeerState::Up
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Responses {
    #[serde(rename = "1xx")]
    pub r1xx: u64,
    #[serde(rename = "2xx")]
    pub r2xx: u64,
    #[serde(rename = "3xx")]
    pub r3xx: u64,
    #[serde(rename = "4xx")]
    pub r4xx: u64,
    #[serde(rename = "5xx")]
    pub r5xx: u64,
}

impl Responses {
    pub fn from_array(a: [u64; 5]) -> Self {
        Responses {
            r1xx: a[0],
            r2xx: a[1],
            r3xx: a[2],
            r4xx: a[3],
            r5xx: a[4],
        }
    }
    pub fn classes(&self) -> [(&'static str, u64); 5] {
        [
            ("1xx", self.r1xx),
            ("2xx", self.r2xx),
            ("3xx", self.r3xx),
            ("4xx", self.r4xx),
            ("5xx", self.r5xx),
        ]
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HealthChecks {
    pub checks: u64,
    pub fails: u64,
    /// Times checks took the peer down.
    pub unhealthy: u64,
    /// `null` before the first result.
    pub last_passed: Option<bool>,
    pub last_reason: String,
    /// Time of the last up/down change, ms since the epoch; `null` if it never changed.
    pub last_change: Option<u64>,
    /// Time spent down by checks, ms, including the current down period.
    pub downtime: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerSnapshot {
    /// As written in the `server` line.
    pub name: String,
    pub address: String,
    pub weight: u32,
    pub backup: bool,
    /// The address came from `server NAME resolve` (DNS) rather than the configuration.
    pub resolved: bool,
    /// The operator's state (`lb_api`): "up", "drain" or "down".
    pub admin: crate::api::Admin,
    /// Where the peer came from: "config" (a `server` line's address), "dns" (a resolved
    /// name) or "api" (added through `lb_api`).
    pub source: &'static str,
    pub state: PeerState,
    pub active: u64,
    pub max_conns: u32,
    pub requests: u64,
    pub responses: Responses,
    /// Passive failures.
    pub fails: u64,
    /// Times passive failures made the peer unavailable.
    pub unavail: u64,
    /// Times outlier detection (`lb_outlier`) ejected the peer.
    pub ejections: u64,
    /// `lb_slow_start`: the share of its weight the peer has while it ramps up (0.1 to 1),
    /// `null` otherwise.
    pub slow_start: Option<f64>,
    /// `null` when the upstream has no `lb_check`.
    pub health_checks: Option<HealthChecks>,
    /// Moving average of the response time, ms; `null` before the first response.
    pub response_time_ms: Option<f64>,
    /// Response times by bucket (`status::histogram`).
    pub response_time_histogram: HistogramSnapshot,
}

impl Default for PeerSnapshot {
    /// A peer with nothing set: what a copy starts from (`shell::status::fill_peer`).
    fn default() -> Self {
        PeerSnapshot {
            name: String::new(),
            address: String::new(),
            weight: 0,
            backup: false,
            resolved: false,
            admin: crate::api::Admin::Up,
            source: "config",
            state: PeerState::Up,
            active: 0,
            max_conns: 0,
            requests: 0,
            responses: Responses::from_array([0; 5]),
            fails: 0,
            unavail: 0,
            ejections: 0,
            slow_start: None,
            health_checks: None,
            response_time_ms: None,
            response_time_histogram: HistogramSnapshot::default(),
        }
    }
}

/// A response-time histogram as the JSON shows it: bucket bounds in seconds (`le`, the last
/// one `null` for +Inf) with cumulative counts, as Prometheus counts them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramSnapshot {
    pub le: Vec<Option<f64>>,
    pub counts: Vec<u64>,
    /// Seconds, all responses added up.
    pub sum: f64,
    pub count: u64,
}

impl HistogramSnapshot {
    /// Makes `self` show `h`, in the memory it has (a scrape copies many peers in turn).
    pub fn set(&mut self, h: super::histogram::Histogram) {
        use super::histogram::{BOUNDS_MS, BUCKETS};
        if self.le.len() != BUCKETS {
            self.le.clear();
            self.le
                .extend((0..BUCKETS).map(|i| BOUNDS_MS.get(i).map(|&ms| ms as f64 / 1000.0)));
        }
        self.counts.clear();
        self.counts.extend_from_slice(&h.cumulative());
        self.sum = h.sum_ms as f64 / 1000.0;
        self.count = h.count();
    }
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        HistogramSnapshot::from(super::histogram::Histogram::default())
    }
}

impl From<super::histogram::Histogram> for HistogramSnapshot {
    fn from(h: super::histogram::Histogram) -> Self {
        let mut out = HistogramSnapshot {
            le: Vec::new(),
            counts: Vec::new(),
            sum: 0.0,
            count: 0,
        };
        out.set(h);
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckSummary {
    #[serde(rename = "type")]
    pub kind: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
    pub uri: Option<String>,
    /// Probe connections kept between probes (http/https; `None` for tcp).
    pub keepalive: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamSnapshot {
    pub name: String,
    /// `"http"` or `"stream"`: which of nginx's proxies the upstream serves.
    pub kind: String,
    pub method: String,
    pub checks: Option<CheckSummary>,
    /// `lb_panic`: whether the upstream is in panic mode; `null` without `lb_panic`.
    pub panic: Option<bool>,
    pub peers: Vec<PeerSnapshot>,
}

/// An upstream without its peers: every field of `UpstreamSnapshot` before `peers`, in the
/// same order (a streamed rendering writes it, then the peers a slice at a time).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamHead {
    pub name: String,
    pub kind: String,
    pub method: String,
    pub checks: Option<CheckSummary>,
    pub panic: Option<bool>,
}

impl UpstreamSnapshot {
    pub fn head(&self) -> UpstreamHead {
        UpstreamHead {
            name: self.name.clone(),
            kind: self.kind.clone(),
            method: self.method.clone(),
            checks: self.checks.clone(),
            panic: self.panic,
        }
    }

    pub fn from_parts(head: UpstreamHead, peers: Vec<PeerSnapshot>) -> Self {
        UpstreamSnapshot {
            name: head.name,
            kind: head.kind,
            method: head.method,
            checks: head.checks,
            panic: head.panic,
            peers,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub module_version: String,
    pub nginx_version: String,
    /// When the snapshot was taken, ms since the epoch.
    pub time: u64,
    pub upstreams: Vec<UpstreamSnapshot>,
}

/// The document without its upstreams: every field of `Snapshot` before `upstreams`, in the
/// same order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotHead {
    pub module_version: String,
    pub nginx_version: String,
    pub time: u64,
}

impl Snapshot {
    pub fn head(&self) -> SnapshotHead {
        SnapshotHead {
            module_version: self.module_version.clone(),
            nginx_version: self.nginx_version.clone(),
            time: self.time,
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    #[test]
    fn state_precedence() {
        use Verdict::*;
        assert_eq!(
            PeerState::derive(true, true, false, Unhealthy),
            PeerState::Down
        );
        assert_eq!(
            PeerState::derive(false, true, false, Unhealthy),
            PeerState::Unhealthy
        );
        assert_eq!(
            PeerState::derive(false, true, true, Usable),
            PeerState::Checking
        );
        assert_eq!(PeerState::derive(false, false, true, Usable), PeerState::Up);
        assert_eq!(
            PeerState::derive(false, true, false, Failed),
            PeerState::Unavailable
        );
        assert_eq!(PeerState::derive(false, false, false, Full), PeerState::Up);
        assert_eq!(PeerState::derive(false, false, false, Probe), PeerState::Up);
    }

    #[test]
    fn histogram_set_in_place_is_from() {
        let mut h = crate::status::histogram::Histogram::default();
        h.counts[2] = 4;
        h.counts[11] = 1;
        h.sum_ms = 99_999;
        let mut reused: HistogramSnapshot = crate::status::histogram::Histogram::default().into();
        reused.set(h);
        assert_eq!(reused, HistogramSnapshot::from(h));
        assert_eq!(reused.le.len(), crate::status::histogram::BUCKETS);
    }

    /// A snapshot with awkward names, used by the renderers' tests.
    pub fn sample() -> Snapshot {
        let peer = |name: &str, state, checks: bool| PeerSnapshot {
            name: name.into(),
            address: name.into(),
            weight: 2,
            backup: false,
            resolved: false,
            admin: crate::api::Admin::Up,
            source: "config",
            state,
            active: 1,
            max_conns: 0,
            requests: 10,
            responses: Responses::from_array([0, 7, 1, 0, 2]),
            fails: 1,
            unavail: 0,
            ejections: 3,
            slow_start: None,
            response_time_histogram: {
                let mut h = crate::status::histogram::Histogram::default();
                h.counts[0] = 9;
                h.counts[11] = 1;
                h.sum_ms = 12_345;
                h.into()
            },
            health_checks: checks.then(|| HealthChecks {
                checks: 5,
                fails: 2,
                unhealthy: 1,
                last_passed: Some(false),
                last_reason: "HTTP 500 \"<oops>\"".into(),
                last_change: Some(1_700_000_000_000),
                downtime: 1500,
            }),
            response_time_ms: Some(1.5),
        };
        Snapshot {
            module_version: "0.1.0".into(),
            nginx_version: "1.28.3".into(),
            time: 1_700_000_001_000,
            upstreams: vec![
                UpstreamSnapshot {
                    name: "back\"end\\1".into(),
                    kind: "http".into(),
                    method: "round_robin".into(),
                    checks: Some(CheckSummary {
                        kind: "http".into(),
                        interval_ms: 1000,
                        timeout_ms: 500,
                        rise: 2,
                        fall: 3,
                        uri: Some("/health".into()),
                        keepalive: Some(true),
                    }),
                    panic: Some(true),
                    peers: vec![
                        peer("127.0.0.1:8081", PeerState::Up, true),
                        peer("127.0.0.1:8082", PeerState::Unhealthy, true),
                    ],
                },
                UpstreamSnapshot {
                    name: "<plain>".into(),
                    kind: "stream".into(),
                    method: "round_robin".into(),
                    checks: None,
                    panic: None,
                    peers: vec![peer("10.0.0.1:80", PeerState::Down, false)],
                },
            ],
        }
    }
}
