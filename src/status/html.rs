//! A page a person reads in a browser: one table per upstream, a row per peer, the state in
//! colour. Self-contained (no external assets) and refreshing itself every few seconds.

use std::io::Write;

use super::snapshot::{PeerSnapshot, PeerState, Snapshot, SnapshotHead, UpstreamHead};
use super::stream::{Budget, Meter, Render, Source, BATCH};

pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn colour(s: PeerState) -> &'static str {
    match s {
        PeerState::Up => "#1a7f37",
        PeerState::Down => "#6e7781",
        PeerState::Unavailable => "#bf8700",
        PeerState::Unhealthy => "#cf222e",
        PeerState::Checking => "#0969da",
        PeerState::Draining => "#8250df",
        PeerState::Ejected => "#953800",
    }
}

pub fn render(s: &Snapshot, refresh_seconds: u32) -> Vec<u8> {
    Render::Html(Stream::new(s.head(), refresh_seconds)).all(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Start,
    /// Upstream `u`'s heading and table, from row `i`.
    Upstream {
        u: usize,
        i: usize,
    },
    Done,
}

/// An HTML rendering in progress.
pub struct Stream {
    head: SnapshotHead,
    refresh_seconds: u32,
    step: Step,
    scratch: Vec<PeerSnapshot>,
}

impl Stream {
    pub fn new(head: SnapshotHead, refresh_seconds: u32) -> Stream {
        Stream {
            head,
            refresh_seconds,
            step: Step::Start,
            scratch: Vec::new(),
        }
    }

    /// See `stream::Render::fill`.
    pub fn fill<S: Source + ?Sized>(&mut self, src: &S, out: &mut Vec<u8>, b: Budget) -> bool {
        let mut m = Meter::new(out, b);
        let count = src.upstreams();
        while self.step != Step::Done && !m.spent(out) {
            self.step = match self.step {
                Step::Start => {
                    let refresh_seconds = self.refresh_seconds;
                    let _ = write!(
                        out,
                        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
                         <meta http-equiv=\"refresh\" content=\"{refresh_seconds}\">\
                         <title>nginx lb status</title><style>\
                         body{{font-family:system-ui,sans-serif;margin:1.5em;color:#24292f}}\
                         table{{border-collapse:collapse;margin-bottom:2em}}\
                         th,td{{border:1px solid #d0d7de;padding:4px 8px;text-align:right}}\
                         th{{background:#f6f8fa}} td.l{{text-align:left}}\
                         .st{{color:#fff;border-radius:4px;padding:1px 6px;font-weight:600}}\
                         </style></head><body>\n<h1>nginx lb status</h1>\n<p>nginx {} · module {} · \
                         refreshed every {refresh_seconds}s</p>\n",
                        escape(&self.head.nginx_version),
                        escape(&self.head.module_version)
                    );
                    Step::Upstream { u: 0, i: 0 }
                }
                Step::Upstream { u, .. } if u == count => {
                    out.extend_from_slice(b"</body></html>\n");
                    Step::Done
                }
                Step::Upstream { u, i } => {
                    if i == 0 {
                        upstream_head(out, &src.head(u));
                    }
                    let n = src.peer_count(u);
                    if i == n {
                        out.extend_from_slice(b"</table>\n");
                        Step::Upstream { u: u + 1, i: 0 }
                    } else {
                        let k = m.take(n - i, BATCH);
                        src.peers(u, i..i + k, &mut self.scratch);
                        for p in &self.scratch {
                            row(out, p);
                        }
                        if i + k == n {
                            out.extend_from_slice(b"</table>\n");
                            Step::Upstream { u: u + 1, i: 0 }
                        } else {
                            Step::Upstream { u, i: i + k }
                        }
                    }
                }
                Step::Done => Step::Done,
            };
        }
        self.step == Step::Done
    }
}

/// An upstream's heading and the head of its table.
fn upstream_head(out: &mut Vec<u8>, u: &UpstreamHead) {
    let checks = match &u.checks {
        Some(c) => format!(
            "checks: {} every {}ms, timeout {}ms, rise {}, fall {}",
            escape(&c.kind),
            c.interval_ms,
            c.timeout_ms,
            c.rise,
            c.fall
        ),
        None => "no active checks".into(),
    };
    let _ = write!(
        out,
        "<h2>{} upstream {}{}</h2>\n<p>method {} · {checks}</p>\n<table>\n<tr>\
         <th>peer</th><th>address</th><th>state</th><th>weight</th><th>active</th>\
         <th>requests</th><th>1xx</th><th>2xx</th><th>3xx</th><th>4xx</th><th>5xx</th>\
         <th>fails</th><th>unavail</th><th>checks</th><th>check fails</th>\
         <th>last check</th><th>downtime (s)</th><th>resp. time (ms)</th></tr>\n",
        escape(&u.kind),
        escape(&u.name),
        if u.panic == Some(true) {
            " <span class=\"st\" style=\"background:#c0392b\">panic</span>"
        } else {
            ""
        },
        escape(&u.method)
    );
}

/// A peer's row.
fn row(out: &mut Vec<u8>, p: &PeerSnapshot) {
    let r = &p.responses;
    let (checks, check_fails, last, downtime) = match &p.health_checks {
        Some(h) => (
            h.checks.to_string(),
            h.fails.to_string(),
            escape(&h.last_reason),
            format!("{:.1}", h.downtime as f64 / 1000.0),
        ),
        None => ("-".into(), "-".into(), "-".into(), "-".into()),
    };
    let _ = writeln!(
        out,
        "<tr><td class=\"l\">{}{}</td><td class=\"l\">{}</td>\
         <td class=\"l\"><span class=\"st\" style=\"background:{}\">{}</span></td>\
         <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td><td>{checks}</td><td>{check_fails}</td>\
         <td class=\"l\">{last}</td><td>{downtime}</td><td>{}</td></tr>",
        escape(&p.name),
        match (p.backup, p.source) {
            (true, "dns") => " (backup, resolved)",
            (true, "api") => " (backup, added)",
            (true, _) => " (backup)",
            (false, "dns") => " (resolved)",
            (false, "api") => " (added)",
            (false, _) => "",
        },
        escape(&p.address),
        colour(p.state),
        p.state.name(),
        p.weight,
        p.active,
        p.requests,
        r.r1xx,
        r.r2xx,
        r.r3xx,
        r.r4xx,
        r.r5xx,
        p.fails,
        p.unavail,
        p.response_time_ms
            .map_or("-".to_string(), |ms| format!("{ms:.1}"))
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::snapshot::tests::sample;

    /// The rendering as it was written before it was streamed: what the output must stay.
    fn reference(s: &Snapshot, refresh_seconds: u32) -> Vec<u8> {
        use core::fmt::Write;
        let mut o = String::new();
        let _ = write!(
            o,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"{refresh_seconds}\">\
             <title>nginx lb status</title><style>\
             body{{font-family:system-ui,sans-serif;margin:1.5em;color:#24292f}}\
             table{{border-collapse:collapse;margin-bottom:2em}}\
             th,td{{border:1px solid #d0d7de;padding:4px 8px;text-align:right}}\
             th{{background:#f6f8fa}} td.l{{text-align:left}}\
             .st{{color:#fff;border-radius:4px;padding:1px 6px;font-weight:600}}\
             </style></head><body>\n<h1>nginx lb status</h1>\n<p>nginx {} · module {} · \
             refreshed every {refresh_seconds}s</p>\n",
            escape(&s.nginx_version),
            escape(&s.module_version)
        );
        for u in &s.upstreams {
            let checks = match &u.checks {
                Some(c) => format!(
                    "checks: {} every {}ms, timeout {}ms, rise {}, fall {}",
                    escape(&c.kind),
                    c.interval_ms,
                    c.timeout_ms,
                    c.rise,
                    c.fall
                ),
                None => "no active checks".into(),
            };
            let _ = write!(
                o,
                "<h2>{} upstream {}{}</h2>\n<p>method {} · {checks}</p>\n<table>\n<tr>\
                 <th>peer</th><th>address</th><th>state</th><th>weight</th><th>active</th>\
                 <th>requests</th><th>1xx</th><th>2xx</th><th>3xx</th><th>4xx</th><th>5xx</th>\
                 <th>fails</th><th>unavail</th><th>checks</th><th>check fails</th>\
                 <th>last check</th><th>downtime (s)</th><th>resp. time (ms)</th></tr>\n",
                escape(&u.kind),
                escape(&u.name),
                if u.panic == Some(true) {
                    " <span class=\"st\" style=\"background:#c0392b\">panic</span>"
                } else {
                    ""
                },
                escape(&u.method)
            );
            for p in &u.peers {
                let r = &p.responses;
                let (checks, check_fails, last, downtime) = match &p.health_checks {
                    Some(h) => (
                        h.checks.to_string(),
                        h.fails.to_string(),
                        escape(&h.last_reason),
                        format!("{:.1}", h.downtime as f64 / 1000.0),
                    ),
                    None => ("-".into(), "-".into(), "-".into(), "-".into()),
                };
                let _ = writeln!(
                    o,
                    "<tr><td class=\"l\">{}{}</td><td class=\"l\">{}</td>\
                     <td class=\"l\"><span class=\"st\" style=\"background:{}\">{}</span></td>\
                     <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td>{}</td><td>{checks}</td><td>{check_fails}</td>\
                     <td class=\"l\">{last}</td><td>{downtime}</td><td>{}</td></tr>",
                    escape(&p.name),
                    match (p.backup, p.source) {
                        (true, "dns") => " (backup, resolved)",
                        (true, "api") => " (backup, added)",
                        (true, _) => " (backup)",
                        (false, "dns") => " (resolved)",
                        (false, "api") => " (added)",
                        (false, _) => "",
                    },
                    escape(&p.address),
                    colour(p.state),
                    p.state.name(),
                    p.weight,
                    p.active,
                    p.requests,
                    r.r1xx,
                    r.r2xx,
                    r.r3xx,
                    r.r4xx,
                    r.r5xx,
                    p.fails,
                    p.unavail,
                    p.response_time_ms
                        .map_or("-".to_string(), |ms| format!("{ms:.1}"))
                );
            }
            o.push_str("</table>\n");
        }
        o.push_str("</body></html>\n");
        o.into_bytes()
    }

    #[test]
    fn streamed_is_the_reference_rendering() {
        use crate::status::stream::tests::{budgets, shapes, sliced};
        for snap in shapes() {
            let want = reference(&snap, 5);
            assert_eq!(render(&snap, 5), want);
            for b in budgets() {
                let got = sliced(|| Render::Html(Stream::new(snap.head(), 5)), &snap, b);
                assert!(got == want, "{b:?}");
            }
        }
    }

    #[test]
    fn every_peer_and_escaped() {
        let out = String::from_utf8(render(&sample(), 5)).unwrap();
        assert!(out.starts_with("<!DOCTYPE html>"));
        assert!(out.contains("content=\"5\""));
        for addr in ["127.0.0.1:8081", "127.0.0.1:8082", "10.0.0.1:80"] {
            assert!(out.contains(addr), "{addr}");
        }
        assert!(out.contains("upstream &lt;plain&gt;"));
        assert!(out.contains("HTTP 500 &quot;&lt;oops&gt;&quot;"));
        assert!(!out.contains("<oops>"));
        assert!(out.contains(">unhealthy</span>"));
        assert!(
            !out.contains("http://") && !out.contains("https://"),
            "no external assets"
        );
    }
}
