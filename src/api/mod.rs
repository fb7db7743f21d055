//! `lb_api`: what a request asks for, pure. The path (relative to the location's prefix) and
//! method become an `Op`; a write's body is parsed with serde (unknown fields, wrong types and
//! out-of-range values refused); every refusal is an `ApiError` with the HTTP status it maps
//! to and a message for `{"error": "..."}`. The nginx side (`shell::api`) reads the body,
//! carries the operation out on the shared records and renders the answer.

pub mod state;

use serde::{Deserialize, Serialize};

/// The largest request body taken, bytes.
pub const MAX_BODY: usize = 4096;
/// The largest weight the API sets (nginx's own `weight=` has no upper bound; this keeps the
/// round-robin schedule of a peer list small).
pub const MAX_WEIGHT: u32 = 10_000;

/// A peer's administrative state, set through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Admin {
    /// Normal: health and passive state decide.
    #[default]
    Up,
    /// No new requests or connections; those in flight finish.
    Drain,
    /// No new requests; checks stop.
    Down,
}

impl Admin {
    /// As stored in a shared record.
    pub fn code(self) -> u32 {
        match self {
            Admin::Up => 0,
            Admin::Drain => 1,
            Admin::Down => 2,
        }
    }

    pub fn from_code(c: u32) -> Admin {
        match c {
            1 => Admin::Drain,
            2 => Admin::Down,
            _ => Admin::Up,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Admin::Up => "up",
            Admin::Drain => "drain",
            Admin::Down => "down",
        }
    }
}

/// The body of `PATCH upstreams/NAME/peers/ADDRESS`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerPatch {
    pub admin: Option<Admin>,
    /// `Some(Some(n))`: set weight n; `Some(None)` (`"weight": null`): back to the configured
    /// weight; `None`: leave it.
    #[serde(default, deserialize_with = "present")]
    pub weight: Option<Option<u32>>,
}

/// A field that is present, whatever its value (so that `null` differs from absent).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The body of `POST upstreams/NAME/peers`, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPeerBody {
    address: String,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    backup: bool,
    #[serde(default)]
    max_conns: u32,
    #[serde(default = "one")]
    max_fails: u32,
    #[serde(default)]
    fail_timeout: Option<String>,
}

fn one() -> u32 {
    1
}

/// The largest `max_fails` taken.
pub const MAX_FAILS: u32 = 1_000_000;

/// A peer to add, checked: an IP address and port (names are for `server ... resolve`), and
/// the parameters of a `server` line with nginx's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPeer {
    pub address: std::net::SocketAddr,
    pub weight: u32,
    pub backup: bool,
    pub max_conns: u32,
    pub max_fails: u32,
    pub fail_timeout_ms: u64,
}

impl NewPeer {
    /// The address as nginx writes it (`$upstream_addr`): `10.0.0.7:8080`, `[::1]:80`.
    pub fn name(&self) -> String {
        canonical(&self.address)
    }
}

/// An address as nginx writes it.
pub fn canonical(a: &std::net::SocketAddr) -> String {
    match a {
        std::net::SocketAddr::V4(v4) => v4.to_string(),
        std::net::SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

/// nginx's `fail_timeout` default.
pub const DEFAULT_FAIL_TIMEOUT_MS: u64 = 10_000;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `GET upstreams`.
    ListUpstreams,
    /// `GET upstreams/NAME`.
    GetUpstream(String),
    /// `GET upstreams/NAME/peers/ADDRESS`.
    GetPeer { upstream: String, address: String },
    /// `PATCH upstreams/NAME/peers/ADDRESS`.
    PatchPeer {
        upstream: String,
        address: String,
        patch: PeerPatch,
    },
    /// `GET upstreams/NAME/peers`.
    ListPeers(String),
    /// `POST upstreams/NAME/peers`.
    AddPeer { upstream: String, peer: NewPeer },
    /// `DELETE upstreams/NAME/peers/ADDRESS`.
    DeletePeer { upstream: String, address: String },
}

/// A refused request: its HTTP status and what to say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// For 405: the methods the resource takes (the `Allow` header).
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            allow: None,
        }
    }

    fn not_allowed(message: impl Into<String>, allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(405, message)
        }
    }

    /// `{"error": "..."}`.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
        }
        serde_json::to_vec(&Body {
            error: &self.message,
        })
        .unwrap_or_default()
    }
}

/// The HTTP methods the API knows (others are refused with 405).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Patch,
    Post,
    Delete,
    Other,
}

impl Method {
    /// Whether the method changes something (and needs `write=on`).
    pub fn writes(self) -> bool {
        matches!(self, Method::Patch | Method::Post | Method::Delete)
    }
}

/// Refuses (403) a write sent by a browser from a page of another site. Browsers send `Origin`
/// with every POST, PATCH and DELETE, and a page of any site may *send* a POST to any address
/// its reader's browser reaches (a form, or `fetch` in `no-cors` mode: the answer stays
/// unreadable, but the peer would be added). So a write whose `Origin` names another
/// host and port than the request's `Host` (or is `null`) is refused; the page `lb_status
/// api=` serves, from the same server, passes. Clients that are not browsers (curl, scripts)
/// send no `Origin` and are not affected.
pub fn cross_site(origin: Option<&[u8]>, host: Option<&[u8]>) -> Option<ApiError> {
    let origin = origin?;
    let refuse = || {
        Some(ApiError::new(
            403,
            format!(
                "a write from a page of another site (Origin: {}) is refused",
                origin.escape_ascii()
            ),
        ))
    };
    let Some(host) = host else { return refuse() };
    // "scheme://authority", without a path; the authority without its scheme's default port.
    let text = origin.to_ascii_lowercase();
    let (scheme, authority) = match text.iter().position(|&b| b == b':') {
        Some(i) if text[i..].starts_with(b"://") => (&text[..i], &text[i + 3..]),
        _ => return refuse(),
    };
    let default_port: &[u8] = match scheme {
        b"http" => b":80",
        b"https" => b":443",
        _ => return refuse(),
    };
    let strip = |a: &[u8]| -> Vec<u8> {
        let a = a.strip_suffix(default_port).unwrap_or(a);
        a.to_ascii_lowercase()
    };
    if authority.is_empty() || authority.contains(&b'/') || strip(authority) != strip(host) {
        return refuse();
    }
    None
}

/// Turns a request into an operation. `path` is relative to the location's prefix, without
/// the query string, %-escapes already decoded (nginx's `$uri`: an IPv6 peer may be written
/// `%5B::1%5D:80`); `write` says whether this `lb_api` takes writes; `body` is the request
/// body (only read for writes).
pub fn parse(method: Method, path: &[u8], write: bool, body: &[u8]) -> Result<Op, ApiError> {
    let path =
        core::str::from_utf8(path).map_err(|_| ApiError::new(400, "the path is not UTF-8"))?;
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let reading = matches!(method, Method::Get | Method::Head);
    let route = match parts.as_slice() {
        ["upstreams"] => Route::Upstreams,
        ["upstreams", name] if !name.is_empty() => Route::Upstream(name.to_string()),
        ["upstreams", name, "peers"] if !name.is_empty() => Route::Peers(name.to_string()),
        ["upstreams", name, "peers", address] if !name.is_empty() && !address.is_empty() => {
            Route::Peer(name.to_string(), address.to_string())
        }
        _ => return Err(ApiError::new(404, format!("no such resource \"/{path}\""))),
    };
    let allow = route.allow(write);
    if method.writes() && !write && route.allow(true) != allow {
        return Err(ApiError::not_allowed(
            "this lb_api is read-only (lb_api write=on takes changes)",
            allow,
        ));
    }
    match (route, method) {
        (Route::Upstreams, _) if reading => Ok(Op::ListUpstreams),
        (Route::Upstream(u), _) if reading => Ok(Op::GetUpstream(u)),
        (Route::Peers(u), _) if reading => Ok(Op::ListPeers(u)),
        (Route::Peer(upstream, address), _) if reading => Ok(Op::GetPeer { upstream, address }),
        (Route::Peer(upstream, address), Method::Patch) if write => Ok(Op::PatchPeer {
            upstream,
            address,
            patch: parse_patch(body)?,
        }),
        (Route::Peer(upstream, address), Method::Delete) if write => {
            Ok(Op::DeletePeer { upstream, address })
        }
        (Route::Peers(upstream), Method::Post) if write => Ok(Op::AddPeer {
            upstream,
            peer: parse_new_peer(body)?,
        }),
        (_, _) => Err(ApiError::not_allowed(
            "method not allowed on this resource",
            allow,
        )),
    }
}

enum Route {
    Upstreams,
    Upstream(String),
    Peers(String),
    Peer(String, String),
}

impl Route {
    /// The methods the resource takes (the `Allow` header of a 405).
    fn allow(&self, write: bool) -> &'static str {
        match (self, write) {
            (Route::Peers(_), true) => "GET, HEAD, POST",
            (Route::Peer(..), true) => "GET, HEAD, PATCH, DELETE",
            _ => "GET, HEAD",
        }
    }
}

/// Parses and checks a POST body (a peer to add).
pub fn parse_new_peer(body: &[u8]) -> Result<NewPeer, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            413,
            format!("the body is larger than {MAX_BODY} bytes"),
        ));
    }
    let b: NewPeerBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, format!("invalid body: {e}")))?;
    let bad = |m: String| ApiError::new(400, format!("invalid body: {m}"));
    let address: std::net::SocketAddr = b.address.parse().map_err(|_| {
        bad(format!(
            "address \"{}\" is not an IP address and port such as 10.0.0.7:8080 or [::1]:8080 \
             (names are for \"server ... resolve\")",
            b.address.escape_default()
        ))
    })?;
    if let std::net::SocketAddr::V6(v6) = address {
        if v6.scope_id() != 0 {
            return Err(bad(format!(
                "address \"{}\" has a scope (link-local addresses are not taken)",
                b.address.escape_default()
            )));
        }
    }
    if address.port() == 0 {
        return Err(bad(format!("address \"{}\" has port 0", b.address)));
    }
    if !(1..=MAX_WEIGHT).contains(&b.weight) {
        return Err(bad(format!(
            "weight {} is out of range (1 to {MAX_WEIGHT})",
            b.weight
        )));
    }
    if b.max_fails > MAX_FAILS {
        return Err(bad(format!(
            "max_fails {} is out of range (0 to {MAX_FAILS})",
            b.max_fails
        )));
    }
    let fail_timeout_ms = match &b.fail_timeout {
        None => DEFAULT_FAIL_TIMEOUT_MS,
        Some(t) => crate::conf::time::parse_time_ms(t.as_bytes())
            .filter(|&ms| ms <= 365 * 24 * 3600 * 1000)
            .ok_or_else(|| {
                bad(format!(
                    "fail_timeout \"{}\" is not a time such as 10s",
                    t.escape_default()
                ))
            })?,
    };
    Ok(NewPeer {
        address,
        weight: b.weight,
        backup: b.backup,
        max_conns: b.max_conns,
        max_fails: b.max_fails,
        fail_timeout_ms,
    })
}

/// Parses and checks a PATCH body.
pub fn parse_patch(body: &[u8]) -> Result<PeerPatch, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            413,
            format!("the body is larger than {MAX_BODY} bytes"),
        ));
    }
    let patch: PeerPatch = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, format!("invalid body: {e}")))?;
    if let Some(Some(w)) = patch.weight {
        if !(1..=MAX_WEIGHT).contains(&w) {
            return Err(ApiError::new(
                400,
                format!("invalid body: weight {w} is out of range (1 to {MAX_WEIGHT})"),
            ));
        }
    }
    if patch.admin.is_none() && patch.weight.is_none() {
        return Err(ApiError::new(
            400,
            "invalid body: nothing to change (expected \"admin\" and/or \"weight\")",
        ));
    }
    Ok(patch)
}

/// `?kind=http` or `?kind=stream` on a request's arguments (other arguments are ignored): which
/// of two upstreams of one name (an http and a stream one) a request means. `None` without it.
pub fn kind_arg(args: &[u8]) -> Result<Option<state::Kind>, ApiError> {
    for pair in args.split(|&b| b == b'&') {
        if let Some(v) = pair.strip_prefix(b"kind=") {
            return match v {
                b"http" => Ok(Some(state::Kind::Http)),
                b"stream" => Ok(Some(state::Kind::Stream)),
                _ => Err(ApiError::new(
                    400,
                    format!(
                        "invalid kind \"{}\" (expected http or stream)",
                        v.escape_ascii()
                    ),
                )),
            };
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_from_other_sites_are_refused() {
        let h = Some(&b"127.0.0.1:8080"[..]);
        // No Origin (curl, scripts): not a browser, nothing to check.
        assert_eq!(cross_site(None, h), None);
        assert_eq!(cross_site(None, None), None);
        // The dashboard, from the same server.
        assert_eq!(cross_site(Some(b"http://127.0.0.1:8080"), h), None);
        assert_eq!(
            cross_site(Some(b"HTTP://LB.example"), Some(b"lb.example")),
            None
        );
        assert_eq!(
            cross_site(Some(b"http://lb.example"), Some(b"lb.example:80")),
            None
        );
        assert_eq!(
            cross_site(Some(b"https://lb.example:443"), Some(b"lb.example")),
            None
        );
        assert_eq!(
            cross_site(Some(b"https://[::1]:8443"), Some(b"[::1]:8443")),
            None
        );
        for (origin, host) in [
            (&b"http://evil.example"[..], h),
            (b"http://127.0.0.1:8081", h),
            (b"http://127.0.0.1", h),
            (b"null", h),
            (b"http://127.0.0.1:8080/x", h),
            (b"ftp://127.0.0.1:8080", h),
            (b"http://", Some(b"")),
            (b"http://127.0.0.1:8080", None),
        ] {
            let e = cross_site(Some(origin), host).expect("refused");
            assert_eq!(e.status, 403);
            assert!(e.message.contains("another site"), "{}", e.message);
        }
    }

    fn get(p: &str) -> Result<Op, ApiError> {
        parse(Method::Get, p.as_bytes(), false, b"")
    }

    fn patch(p: &str, body: &str, write: bool) -> Result<Op, ApiError> {
        parse(Method::Patch, p.as_bytes(), write, body.as_bytes())
    }

    fn status(r: Result<Op, ApiError>) -> u16 {
        r.map_or_else(|e| e.status, |_| 200)
    }

    #[test]
    fn routes() {
        assert_eq!(get("upstreams"), Ok(Op::ListUpstreams));
        assert_eq!(get("/upstreams/"), Ok(Op::ListUpstreams));
        assert_eq!(
            get("upstreams/backend"),
            Ok(Op::GetUpstream("backend".into()))
        );
        assert_eq!(
            get("upstreams/backend/peers/[::1]:8080"),
            Ok(Op::GetPeer {
                upstream: "backend".into(),
                address: "[::1]:8080".into()
            })
        );
        assert_eq!(status(get("nothing")), 404);
        assert_eq!(status(get("upstreams/a/b")), 404);
        assert_eq!(status(get("upstreams//peers/x")), 404);
        assert_eq!(status(parse(Method::Other, b"upstreams", true, b"")), 405);
        assert_eq!(status(patch("upstreams", "{}", true)), 405);
        assert_eq!(get("upstreams/u/peers"), Ok(Op::ListPeers("u".into())));
        // 405 says what the resource takes, and that a read-only API takes no writes.
        let e = parse(Method::Delete, b"upstreams/u", true, b"").unwrap_err();
        assert_eq!((e.status, e.allow), (405, Some("GET, HEAD")));
        let e = parse(Method::Delete, b"upstreams/u/peers/a", false, b"").unwrap_err();
        assert_eq!((e.status, e.allow), (405, Some("GET, HEAD")));
        assert!(e.message.contains("read-only"), "{}", e.message);
        let e = parse(Method::Post, b"upstreams/u/peers/a", true, b"{}").unwrap_err();
        assert_eq!((e.status, e.allow), (405, Some("GET, HEAD, PATCH, DELETE")));
        let e = parse(Method::Patch, b"upstreams/u/peers", true, b"{}").unwrap_err();
        assert_eq!((e.status, e.allow), (405, Some("GET, HEAD, POST")));
        assert_eq!(
            parse(Method::Delete, b"upstreams/u/peers/a", true, b""),
            Ok(Op::DeletePeer {
                upstream: "u".into(),
                address: "a".into()
            })
        );
    }

    #[test]
    fn new_peers() {
        let post = |body: &str| parse(Method::Post, b"upstreams/u/peers", true, body.as_bytes());
        let Ok(Op::AddPeer { upstream, peer }) = post(r#"{"address": "10.0.0.7:8080"}"#) else {
            panic!("not added");
        };
        assert_eq!(upstream, "u");
        // nginx's defaults for a server line.
        assert_eq!(
            (peer.weight, peer.backup, peer.max_conns, peer.max_fails),
            (1, false, 0, 1)
        );
        assert_eq!(peer.fail_timeout_ms, DEFAULT_FAIL_TIMEOUT_MS);
        assert_eq!(peer.name(), "10.0.0.7:8080");
        let Ok(Op::AddPeer { peer, .. }) = post(
            r#"{"address": "[::1]:80", "weight": 3, "backup": true, "max_conns": 5,
                "max_fails": 0, "fail_timeout": "1m30s"}"#,
        ) else {
            panic!("not added");
        };
        assert_eq!(peer.name(), "[::1]:80");
        assert_eq!(
            (peer.weight, peer.backup, peer.max_conns, peer.max_fails),
            (3, true, 5, 0)
        );
        assert_eq!(peer.fail_timeout_ms, 90_000);
        for bad in [
            "",
            "{}",
            r#"{"address": "backend.local:80"}"#,
            r#"{"address": "10.0.0.7"}"#,
            r#"{"address": "10.0.0.7:0"}"#,
            r#"{"address": "10.0.0.7:70000"}"#,
            r#"{"address": "[fe80::1%2]:80"}"#,
            r#"{"address": 7}"#,
            r#"{"address": "10.0.0.7:80", "weight": 0}"#,
            r#"{"address": "10.0.0.7:80", "weight": 10001}"#,
            r#"{"address": "10.0.0.7:80", "max_fails": -1}"#,
            r#"{"address": "10.0.0.7:80", "fail_timeout": "soon"}"#,
            r#"{"address": "10.0.0.7:80", "fail_timeout": 10}"#,
            r#"{"address": "10.0.0.7:80", "backup": "yes"}"#,
            r#"{"address": "10.0.0.7:80", "colour": "red"}"#,
        ] {
            assert_eq!(status(post(bad)), 400, "{bad}");
        }
        // Read-only: refused before the body is looked at.
        assert_eq!(
            status(parse(Method::Post, b"upstreams/u/peers", false, b"x")),
            405
        );
        let big = format!(r#"{{"address": "10.0.0.7:80"{}}}"#, " ".repeat(MAX_BODY));
        assert_eq!(status(post(&big)), 413);
    }

    #[test]
    fn patches() {
        assert_eq!(
            patch(
                "upstreams/u/peers/1.2.3.4:80",
                r#"{"admin": "drain"}"#,
                true
            ),
            Ok(Op::PatchPeer {
                upstream: "u".into(),
                address: "1.2.3.4:80".into(),
                patch: PeerPatch {
                    admin: Some(Admin::Drain),
                    weight: None
                }
            })
        );
        let both = patch(
            "upstreams/u/peers/a",
            r#"{"weight": 3, "admin": "up"}"#,
            true,
        )
        .unwrap();
        assert!(matches!(
            both,
            Op::PatchPeer {
                patch: PeerPatch {
                    admin: Some(Admin::Up),
                    weight: Some(Some(3))
                },
                ..
            }
        ));
        // null: back to the configured weight; absent: unchanged.
        let back = patch("upstreams/u/peers/a", r#"{"weight": null}"#, true).unwrap();
        assert!(matches!(
            back,
            Op::PatchPeer {
                patch: PeerPatch {
                    admin: None,
                    weight: Some(None)
                },
                ..
            }
        ));
        // Read-only: 405 before the body is even looked at.
        assert_eq!(status(patch("upstreams/u/peers/a", "garbage", false)), 405);
        for bad in [
            "",
            "{",
            "[]",
            r#"{"admin": "maint"}"#,
            r#"{"admin": 1}"#,
            r#"{"weight": "3"}"#,
            r#"{"weight": 0}"#,
            r#"{"weight": 10001}"#,
            r#"{"weight": -1}"#,
            r#"{"weight": 1.5}"#,
            r#"{"colour": "red"}"#,
            "{}",
        ] {
            assert_eq!(
                status(patch("upstreams/u/peers/a", bad, true)),
                400,
                "{bad}"
            );
        }
        let big = format!(r#"{{"weight": 1{}}}"#, " ".repeat(MAX_BODY));
        assert_eq!(status(patch("upstreams/u/peers/a", &big, true)), 413);
    }

    #[test]
    fn errors_are_json() {
        let e = patch("upstreams/u/peers/a", r#"{"colour": 1}"#, true).unwrap_err();
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("unknown field `colour`"),
            "{v}"
        );
        assert_eq!(Admin::from_code(Admin::Drain.code()), Admin::Drain);
        assert_eq!(Admin::from_code(99), Admin::Up);
    }

    #[test]
    fn kind_argument() {
        assert_eq!(kind_arg(b"").unwrap(), None);
        assert_eq!(kind_arg(b"x=1").unwrap(), None);
        assert_eq!(kind_arg(b"kind=stream").unwrap(), Some(state::Kind::Stream));
        assert_eq!(kind_arg(b"a=b&kind=http").unwrap(), Some(state::Kind::Http));
        let e = kind_arg(b"kind=udp").unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (400, "invalid kind \"udp\" (expected http or stream)")
        );
    }
}
