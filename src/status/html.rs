//! A page a person reads in a browser. The server writes a table per upstream (a row per
//! peer, the state as a coloured word), which is what a browser without JavaScript shows and
//! refreshes every few seconds; an inline script (`page/dashboard.js`) replaces it with a live
//! dashboard fed by the JSON of the same location every second: requests/s and response time
//! per peer over the last 5 minutes, a health timeline per peer, and with `lb_status
//! api=PATH` drain / down / up buttons and a weight field that call `lb_api`. Self-contained:
//! no external asset, and `content_security_policy()` (sent by the shell) allows exactly the
//! page's own script and style sheet, and requests to its own server.

use std::io::Write;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::snapshot::{PeerSnapshot, Snapshot, SnapshotHead, UpstreamHead};
use super::stream::{Budget, Meter, Render, Source, BATCH};

/// The dashboard's script and style sheet, put in the page as they are (their hashes are in
/// the Content-Security-Policy: a byte changed here changes the header with it).
pub const SCRIPT: &str = include_str!("page/dashboard.js");
pub const STYLE: &str = include_str!("page/dashboard.css");

/// The `Content-Security-Policy` of the page: nothing but its own inline script and style
/// (by their SHA-256), and `fetch` to its own server (the JSON, lb_api). The shell computes it
/// once per `lb_status` location, when the configuration is read (about 50 µs), and keeps it
/// with the location's configuration.
pub fn content_security_policy() -> String {
    format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
         img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256(SCRIPT),
        sha256(STYLE)
    )
}

/// A CSP source for inline text: `sha256-` and the base64 of its SHA-256.
fn sha256(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

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

pub fn render(s: &Snapshot, refresh_seconds: u32, api: Option<&str>) -> Vec<u8> {
    Render::Html(Stream::new(
        s.head(),
        refresh_seconds,
        api.map(str::to_string),
    ))
    .all(s)
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
    /// `lb_status api=PATH`: the lb_api the page's buttons call.
    api: Option<String>,
    step: Step,
    scratch: Vec<PeerSnapshot>,
}

impl Stream {
    pub fn new(head: SnapshotHead, refresh_seconds: u32, api: Option<String>) -> Stream {
        Stream {
            head,
            refresh_seconds,
            api,
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
                    page_head(out, &self.head, self.refresh_seconds, self.api.as_deref());
                    Step::Upstream { u: 0, i: 0 }
                }
                Step::Upstream { u, .. } if u == count => {
                    let _ = write!(
                        out,
                        "</main>\n<div id=\"dash\"></div>\n<script>{SCRIPT}</script>\n\
                         </body></html>\n"
                    );
                    Step::Done
                }
                Step::Upstream { u, i } => {
                    if i == 0 {
                        upstream_head(out, &src.head(u));
                    }
                    let n = src.peer_count(u);
                    if i == n {
                        out.extend_from_slice(TABLE_END);
                        Step::Upstream { u: u + 1, i: 0 }
                    } else {
                        let k = m.take(n - i, BATCH);
                        src.peers(u, i..i + k, &mut self.scratch);
                        for p in &self.scratch {
                            row(out, p);
                        }
                        if i + k == n {
                            out.extend_from_slice(TABLE_END);
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

const TABLE_END: &[u8] = b"</table></div>\n";

/// The document's head, the page header, and the start of the tables. Without JavaScript the
/// page refreshes itself (`<noscript>`: with it, the script polls instead).
fn page_head(out: &mut Vec<u8>, head: &SnapshotHead, refresh_seconds: u32, api: Option<&str>) {
    let (api_attr, ro) = match api {
        Some(a) => (
            format!(" data-api=\"{}\"", escape(a)),
            format!("admin through lb_api at {} (needs JavaScript)", escape(a)),
        ),
        None => (String::new(), "read-only".to_string()),
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <noscript><meta http-equiv=\"refresh\" content=\"{refresh_seconds}\"></noscript>\
         <title>nginx lb status</title><link rel=\"icon\" href=\"data:,\">\
         <style>{STYLE}</style></head>\n\
         <body{api_attr}>\n<header><h1>nginx lb status</h1>\n<p>nginx {} · module {} · \
         <span id=\"mode\">refreshed every {refresh_seconds}s</span></p>\n\
         <p id=\"ro\">{ro}</p>\n<p id=\"note\" role=\"status\" aria-live=\"polite\"></p>\
         </header>\n<main id=\"tables\">\n",
        escape(&head.nginx_version),
        escape(&head.module_version)
    );
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
        "<h2>{}upstream {}{}</h2>\n<p>method {} · {checks}</p>\n<div class=\"tw\"><table>\n<tr>\
         <th>peer</th><th>address</th><th>state</th><th>weight</th><th>active</th>\
         <th>requests</th><th>1xx</th><th>2xx</th><th>3xx</th><th>4xx</th><th>5xx</th>\
         <th>fails</th><th>unavail</th><th>checks</th><th>check fails</th>\
         <th>last check</th><th>downtime (s)</th><th>resp. time (ms)</th></tr>\n",
        // Stream upstreams say so (an http one may have the same name).
        if u.kind == "stream" { "stream " } else { "" },
        escape(&u.name),
        if u.panic == Some(true) {
            " <span class=\"st panic\">panic</span>"
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
    let state = p.state.name();
    let _ = writeln!(
        out,
        "<tr><td class=\"l\">{}{}</td><td class=\"l\">{}</td>\
         <td class=\"l\"><span class=\"st s-{state}\">{state}</span></td>\
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

    #[test]
    fn streamed_is_the_whole_rendering() {
        use crate::status::stream::tests::{budgets, shapes, sliced};
        for snap in shapes() {
            for api in [None, Some("/lb-api/")] {
                let want = render(&snap, 5, api);
                for b in budgets() {
                    let got = sliced(
                        || Render::Html(Stream::new(snap.head(), 5, api.map(str::to_string))),
                        &snap,
                        b,
                    );
                    assert!(got == want, "{b:?}");
                }
            }
        }
    }

    /// The table a browser without JavaScript shows: a row per peer, as before the dashboard.
    #[test]
    fn the_table_without_javascript() {
        let mut s = sample();
        s.upstreams.truncate(1);
        s.upstreams[0].peers.truncate(1);
        let p = &s.upstreams[0].peers[0];
        let out = String::from_utf8(render(&s, 5, None)).unwrap();
        let want_row = format!(
            "<tr><td class=\"l\">{0}</td><td class=\"l\">{0}</td><td class=\"l\">\
             <span class=\"st s-{1}\">{1}</span></td><td>{2}</td>",
            escape(&p.name),
            p.state.name(),
            p.weight
        );
        assert!(out.contains(&want_row), "{out}");
        assert!(out.contains("<div class=\"tw\"><table>\n<tr><th>peer</th>"));
        assert!(out.contains("</table></div>\n</main>\n<div id=\"dash\"></div>"));
        // Refreshes itself only without JavaScript (with it, the script polls).
        assert!(out.contains("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>"));
        assert_eq!(out.matches("http-equiv").count(), 1);
        assert!(out.contains("<p id=\"ro\">read-only</p>"));
        assert!(out.contains("\n<body>\n"));
    }

    #[test]
    fn every_peer_and_escaped() {
        let out = String::from_utf8(render(&sample(), 5, None)).unwrap();
        assert!(out.starts_with("<!DOCTYPE html>"));
        for addr in ["127.0.0.1:8081", "127.0.0.1:8082", "10.0.0.1:80"] {
            assert!(out.contains(addr), "{addr}");
        }
        assert!(out.contains("upstream &lt;plain&gt;"));
        assert!(out.contains("upstream back&quot;end\\1"));
        assert!(out.contains("HTTP 500 &quot;&lt;oops&gt;&quot;"));
        assert!(!out.contains("<oops>"));
        assert!(out.contains(">unhealthy</span>"));
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
    }

    #[test]
    fn stream_upstreams_say_so() {
        let out = String::from_utf8(render(&sample(), 5, None)).unwrap();
        // The sample's second upstream is a stream one; http ones keep their heading.
        assert!(
            out.contains("<h2>stream upstream &lt;plain&gt;</h2>"),
            "{out}"
        );
        assert!(out.contains("<h2>upstream back"), "{out}");
    }

    #[test]
    fn api_path_is_an_escaped_attribute() {
        let out = String::from_utf8(render(&sample(), 5, Some("/a&b<\"x\"/"))).unwrap();
        assert!(out.contains("<body data-api=\"/a&amp;b&lt;&quot;x&quot;/\">"));
        assert!(out.contains("admin through lb_api at /a&amp;b&lt;&quot;x&quot;/"));
    }

    /// The page loads nothing from anywhere, and the policy allows exactly its own script and
    /// style sheet: the hashes of the text in the page.
    #[test]
    fn self_contained_under_its_policy() {
        let out = String::from_utf8(render(&sample(), 5, Some("/lb-api/"))).unwrap();
        let inner = |open: &str, close: &str| {
            let a = out.find(open).unwrap() + open.len();
            let b = a + out[a..].find(close).unwrap();
            out[a..b].to_string()
        };
        let script = inner("<script>", "</script>");
        let style = inner("<style>", "</style>");
        assert_eq!(script, SCRIPT);
        assert_eq!(style, STYLE);
        assert_eq!(out.matches("<script").count(), 1);
        assert_eq!(out.matches("<style").count(), 1);
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'; "), "{csp}");
        assert!(
            csp.contains(&format!("script-src '{}';", sha256(&script))),
            "{csp}"
        );
        assert!(
            csp.contains(&format!("style-src '{}';", sha256(&style))),
            "{csp}"
        );
        assert!(csp.contains("connect-src 'self';"));
        assert!(!csp.contains("unsafe"), "{csp}");
        // Known answer: the SHA-256 of "abc", as `openssl dgst -sha256 -binary | base64`.
        assert_eq!(
            sha256("abc"),
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        // What the policy would refuse: style attributes, inline handlers, other hosts.
        assert!(!out.contains("style=\""));
        assert!(!out.to_ascii_lowercase().contains(" onclick="));
        let text = out.replace("'http://www.w3.org/2000/svg'", "");
        assert!(
            !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
            "no external assets"
        );
    }

    /// The script puts what the server says in the page as text only.
    #[test]
    fn script_never_parses_html() {
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "</script",
            "<!--",
        ] {
            assert!(!SCRIPT.contains(bad), "{bad}");
        }
        assert!(!STYLE.contains("</style"));
    }
}
