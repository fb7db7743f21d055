//! The Prometheus text exposition format (version 0.0.4): metric names prefixed `nginx_lb_`,
//! counters ending in `_total`, labels `upstream` and `peer` (the peer's address).

use core::fmt::Write;

use super::snapshot::{PeerSnapshot, PeerState, Snapshot};

/// A label value with `\`, `"` and newlines escaped.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
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

pub fn render(s: &Snapshot) -> Vec<u8> {
    let mut out = String::new();
    let simple: &[(&str, &str, &str, Value)] = &[
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
    for (name, kind, help, value) in simple {
        let mut body = String::new();
        for u in &s.upstreams {
            for (p, label) in u.peers.iter().zip(peer_labels(&u.peers)) {
                if let Some(v) = value(p) {
                    let _ = writeln!(
                        body,
                        "nginx_lb_{name}{{upstream=\"{}\",peer=\"{label}\"}} {}",
                        escape(&u.name),
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
                    "nginx_lb_peer_responses_total{{upstream=\"{}\",peer=\"{label}\",code=\"{class}\"}} {n}",
                    escape(&u.name),
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
                "nginx_lb_upstream_panic{{upstream=\"{}\"}} {}",
                escape(&u.name),
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
            let labels = format!("upstream=\"{}\",peer=\"{label}\"", escape(&u.name));
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
                    "nginx_lb_peer_state{{upstream=\"{}\",peer=\"{label}\",state=\"{}\"}} {}",
                    escape(&u.name),
                    st.name(),
                    u8::from(p.state == st)
                );
            }
        }
    }
    out.into_bytes()
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
        assert!(out.contains("peer_weight{upstream=\"<plain>\",peer=\"10.0.0.1:80#3\"} 2\n"));
    }

    #[test]
    fn shape() {
        let out = String::from_utf8(render(&sample())).unwrap();
        assert!(out.contains("# TYPE nginx_lb_peer_requests_total counter\n"));
        assert!(out.contains(
            "nginx_lb_peer_requests_total{upstream=\"back\\\"end\\\\1\",peer=\"127.0.0.1:8081\"} 10\n"
        ));
        assert!(out.contains(
            "nginx_lb_peer_responses_total{upstream=\"<plain>\",peer=\"10.0.0.1:80\",code=\"5xx\"} 2\n"
        ));
        assert!(out.contains(
            "nginx_lb_peer_state{upstream=\"<plain>\",peer=\"10.0.0.1:80\",state=\"down\"} 1\n"
        ));
        assert!(out.contains("nginx_lb_peer_response_time_average_seconds{upstream=\"<plain>\",peer=\"10.0.0.1:80\"} 0.0015\n"));
        // The histogram: cumulative buckets, +Inf equal to _count, the sum in seconds.
        let series = "upstream=\"<plain>\",peer=\"10.0.0.1:80\"";
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
            "nginx_lb_peer_ejections_total{upstream=\"<plain>\",peer=\"10.0.0.1:80\"} 3\n"
        ));
        assert!(out.contains(
            "nginx_lb_peer_state{upstream=\"<plain>\",peer=\"10.0.0.1:80\",state=\"ejected\"} 0\n"
        ));
        assert!(out.contains("nginx_lb_upstream_panic{upstream=\"back\\\"end\\\\1\"} 1\n"));
        assert!(!out.contains("nginx_lb_upstream_panic{upstream=\"<plain>\"}"));
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
