//! `lb_check key=value ...`: what to probe, how often, and what counts as healthy. Parsed and
//! validated here, without nginx; the glue compiles the body regex and the TLS context.

use core::fmt;

use crate::conf::error::{InvalidValue, NotKeyValue};
use crate::conf::time::parse_time_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The TCP connect succeeds.
    Tcp,
    /// An HTTP/1.1 request gets an expected status (and body).
    Http,
    /// A TLS handshake, then as `Http`.
    Https,
    /// A UDP datagram (`send=`) gets a reply (matching `expect=`, if given) within `timeout`.
    Udp,
    /// A TLS handshake (then `send=`/`expect=`, if given): stream peers.
    Tls,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Http => "http",
            Kind::Https => "https",
            Kind::Udp => "udp",
            Kind::Tls => "tls",
        }
    }
    pub fn is_http(self) -> bool {
        matches!(self, Kind::Http | Kind::Https)
    }
    /// Whether the type may check the peers of a `stream {}` upstream (HTTP is for `http {}`).
    pub fn for_stream(self) -> bool {
        matches!(self, Kind::Tcp | Kind::Udp | Kind::Tls)
    }
    /// Whether the type may check the peers of an `http {}` upstream (UDP is for `stream {}`).
    pub fn for_http(self) -> bool {
        !matches!(self, Kind::Udp)
    }
    /// A TLS handshake comes first (`https`, `tls`): the TLS parameters apply.
    pub fn uses_tls(self) -> bool {
        matches!(self, Kind::Https | Kind::Tls)
    }
}

/// What the first bytes of a stream check's answer must be (`expect=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// `expect=~REGEX`: a PCRE pattern (nginx's regex engine) the answer must match; anchor it
    /// with `^` to match its first bytes.
    Regex(String),
    /// `expect=TEXT`: the answer starts with these bytes (escapes decoded, see `unescape`).
    Prefix(Vec<u8>),
}

impl Expect {
    /// For a `Prefix`, whether `answer` (what arrived so far) decides: `Some(true)` matches,
    /// `Some(false)` cannot match any more, `None` needs more bytes.
    pub fn prefix_verdict(want: &[u8], answer: &[u8]) -> Option<bool> {
        let n = want.len().min(answer.len());
        if want[..n] != answer[..n] {
            Some(false)
        } else if answer.len() >= want.len() {
            Some(true)
        } else {
            None
        }
    }
}

/// Decodes the escapes of `send=` and `expect=` values for binary protocols: `\xHH` (two hex
/// digits) is the byte HH, `\\` a backslash. (nginx itself has turned `\r`, `\n`, `\t`,
/// `\"` of the configuration into their bytes before we see the value.) A surrounding pair of
/// double quotes is dropped, as for `body=~"..."`.
pub fn unescape(v: &[u8]) -> Result<Vec<u8>, &'static str> {
    let v = strip_quotes(v);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' {
            out.push(v[i]);
            i += 1;
            continue;
        }
        match v.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
                match (hex(v.get(i + 2)), hex(v.get(i + 3))) {
                    (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                    _ => return Err("bad hex escape (expected \\xHH with two hex digits)"),
                }
                i += 4;
            }
            _ => return Err("unknown escape (expected \\xHH or \\\\)"),
        }
    }
    Ok(out)
}

/// `"..."` → `...`: nginx keeps quotes that are inside a word (`send="PING"`).
fn strip_quotes(v: &[u8]) -> &[u8] {
    if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Head,
}

/// Inclusive status ranges, e.g. `200-299,301`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(pub Vec<(u16, u16)>);

impl StatusSet {
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= status && status <= hi)
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// Whom a verified certificate must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Name(String),
    /// An IP address in text form (`127.0.0.1`, `::1`).
    Ip(String),
}

/// Largest part of a probe response we read; the rest is not waited for.
pub const MAX_RESPONSE: usize = 16 * 1024;
/// Longest `send=` value.
pub const MAX_SEND: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConf {
    pub kind: Kind,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
    pub jitter_ms: u64,
    pub uri: String,
    /// `Host` header and (for https) SNI name; `None`: the peer's address.
    pub host: Option<String>,
    pub method: HttpMethod,
    pub status: StatusSet,
    /// A PCRE pattern the body must match (`body=~...`).
    pub body: Option<String>,
    /// Probe this port instead of the peer's.
    pub port: Option<u16>,
    /// State of a peer before its first result.
    pub default_up: bool,
    pub sni: bool,
    pub verify: bool,
    pub trusted_ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// HTTP(S) probes keep their connection open for the next probe (`keepalive=on`, the
    /// default) instead of connecting (and handshaking) every interval.
    pub keepalive: bool,
    /// A kept connection carries probes for at most this long, then the next probe connects
    /// anew (`keepalive_time=`, like nginx's upstream `keepalive_time`).
    pub keepalive_time_ms: u64,
    /// Stream checks: the bytes sent once connected (`send=`).
    pub send: Option<Vec<u8>>,
    /// Stream checks: what the answer must start with (`expect=`).
    pub expect: Option<Expect>,
}

impl Default for CheckConf {
    fn default() -> Self {
        CheckConf {
            kind: Kind::Tcp,
            interval_ms: 2000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
            jitter_ms: 0,
            uri: "/".into(),
            host: None,
            method: HttpMethod::Get,
            status: StatusSet(vec![(200, 399)]),
            body: None,
            port: None,
            default_up: true,
            sni: true,
            verify: false,
            trusted_ca: None,
            cert: None,
            key: None,
            keepalive: true,
            keepalive_time_ms: 60_000,
            send: None,
            expect: None,
        }
    }
}

fn parse_status(v: &[u8]) -> Option<StatusSet> {
    let text = core::str::from_utf8(v).ok()?;
    let mut out = Vec::new();
    for part in text.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let lo: u16 = crate::conf::number::decimal(lo.as_bytes())?;
        let hi: u16 = crate::conf::number::decimal(hi.as_bytes())?;
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
            return None;
        }
        out.push((lo, hi));
    }
    Some(StatusSet(out))
}

fn on_off(v: &[u8]) -> Option<bool> {
    match v {
        b"on" => Some(true),
        b"off" => Some(false),
        _ => None,
    }
}

/// What is wrong with an `lb_check` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    NotKeyValue(#[from] NotKeyValue),
    #[error(transparent)]
    InvalidValue(#[from] InvalidValue),
    #[error(
        "unknown parameter \"{}\" (known: type, interval, timeout, rise, fall, jitter, uri, \
         host, method, status, body, port, default, keepalive, keepalive_time, sni, verify, ca, \
         cert, key)",
        .0.escape_ascii()
    )]
    UnknownParameter(Vec<u8>),
    #[error("\"timeout\" ({timeout_ms}ms) must not be longer than \"interval\" ({interval_ms}ms)")]
    TimeoutOverInterval { timeout_ms: u64, interval_ms: u64 },
    #[error("\"jitter\" ({jitter_ms}ms) must be shorter than \"interval\" ({interval_ms}ms)")]
    JitterNotShorter { jitter_ms: u64, interval_ms: u64 },
    /// A parameter of HTTP probes (named) on a `type=tcp` check.
    #[error("\"{0}\" needs type=http or type=https")]
    NeedsHttp(&'static str),
    /// A TLS parameter (named) on a check that is not `type=https` or `type=tls`.
    #[error("\"{0}\" needs type=https or type=tls")]
    NeedsHttps(&'static str),
    /// `send=`/`expect=` (named) on an HTTP check.
    #[error("\"{0}\" needs type=tcp, udp or tls")]
    NeedsStream(&'static str),
    #[error("\"send\" needs \"expect\" (what the answer must start with)")]
    SendWithoutExpect,
    #[error("type=udp needs \"send\" (the datagram to send)")]
    UdpWithoutSend,
    #[error("\"cert\" and \"key\" go together")]
    CertWithoutKey,
    #[error("\"verify=on\" needs \"ca=\" (a file of trusted CA certificates)")]
    VerifyWithoutCa,
}

/// What a zero time or an on/off flag is told (several keys share these).
const POSITIVE: &str = "must be positive";
const ON_OFF: &str = "expected on or off";

/// Parses the arguments of `lb_check` (without the directive name).
pub fn parse_check(args: &[&[u8]]) -> Result<CheckConf, CheckError> {
    let mut c = CheckConf::default();
    let mut seen_http_only: Option<&str> = None;
    let mut seen_tls_only: Option<&str> = None;
    let mut timeout_set = false;
    for arg in args {
        let Some(eq) = arg.iter().position(|&b| b == b'=') else {
            return Err(NotKeyValue(arg.to_vec()).into());
        };
        let (key, value) = (&arg[..eq], &arg[eq + 1..]);
        let bad = |expected| Err(InvalidValue::new(key, value, expected).into());
        match key {
            b"type" => {
                c.kind = match value {
                    b"tcp" => Kind::Tcp,
                    b"http" => Kind::Http,
                    b"https" => Kind::Https,
                    b"udp" => Kind::Udp,
                    b"tls" => Kind::Tls,
                    _ => return bad("expected tcp, http, https, udp or tls"),
                }
            }
            b"interval" | b"timeout" | b"jitter" | b"keepalive_time" => {
                let Some(ms) = parse_time_ms(value) else {
                    return bad("expected a time such as 500ms or 2s");
                };
                match key {
                    b"interval" if ms == 0 => return bad(POSITIVE),
                    b"timeout" if ms == 0 => return bad(POSITIVE),
                    b"keepalive_time" if ms == 0 => return bad(POSITIVE),
                    b"keepalive_time" => {
                        c.keepalive_time_ms = ms;
                        seen_http_only = Some("keepalive_time");
                    }
                    b"interval" => c.interval_ms = ms,
                    b"timeout" => {
                        c.timeout_ms = ms;
                        timeout_set = true;
                    }
                    _ => c.jitter_ms = ms,
                }
            }
            b"rise" | b"fall" => {
                let n = crate::conf::number::decimal::<u32>(value).filter(|&n| n > 0 && n <= 1000);
                let Some(n) = n else {
                    return bad("expected a positive integer (at most 1000)");
                };
                if key == b"rise" {
                    c.rise = n;
                } else {
                    c.fall = n;
                }
            }
            b"uri" => {
                if value.first() != Some(&b'/') {
                    return bad("must start with \"/\"");
                }
                if value.iter().any(|&b| b <= b' ' || b == 0x7f) {
                    return bad("must not contain spaces or control characters");
                }
                c.uri = String::from_utf8_lossy(value).into_owned();
                seen_http_only = Some("uri");
            }
            b"host" => {
                if value.is_empty()
                    || value
                        .iter()
                        .any(|&b| !(b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)))
                {
                    return bad("expected a host name, optionally with :port");
                }
                c.host = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"method" => {
                c.method = match value {
                    b"GET" => HttpMethod::Get,
                    b"HEAD" => HttpMethod::Head,
                    _ => return bad("expected GET or HEAD"),
                };
                seen_http_only = Some("method");
            }
            b"status" => {
                let Some(set) = parse_status(value) else {
                    return bad("expected codes and ranges from 100 to 599, e.g. 200-299,301");
                };
                c.status = set;
                seen_http_only = Some("status");
            }
            b"body" => {
                let Some(mut re) = value.strip_prefix(b"~") else {
                    return bad("expected ~regex");
                };
                // `body=~"ok|ready"`: nginx keeps quotes that are inside a word, so drop a
                // surrounding pair. (A pattern with spaces needs the whole parameter quoted:
                // `"body=~a b"`.)
                if re.len() >= 2 && re[0] == b'"' && re[re.len() - 1] == b'"' {
                    re = &re[1..re.len() - 1];
                }
                if re.is_empty() {
                    return bad("empty regex");
                }
                c.body = Some(String::from_utf8_lossy(re).into_owned());
                seen_http_only = Some("body");
            }
            b"port" => {
                let p = crate::conf::number::decimal::<u16>(value).filter(|&p| p > 0);
                let Some(p) = p else {
                    return bad("expected a port from 1 to 65535");
                };
                c.port = Some(p);
            }
            b"default" => {
                c.default_up = match value {
                    b"up" => true,
                    b"down" => false,
                    _ => return bad("expected up or down"),
                }
            }
            b"keepalive" => {
                let Some(v) = on_off(value) else {
                    return bad(ON_OFF);
                };
                c.keepalive = v;
                seen_http_only = Some("keepalive");
            }
            b"sni" | b"verify" => {
                let Some(v) = on_off(value) else {
                    return bad(ON_OFF);
                };
                if key == b"sni" {
                    c.sni = v;
                    seen_tls_only = Some("sni");
                } else {
                    c.verify = v;
                    seen_tls_only = Some("verify");
                }
            }
            b"ca" | b"cert" | b"key" => {
                if value.is_empty() {
                    return bad("expected a file name");
                }
                let v = Some(String::from_utf8_lossy(value).into_owned());
                match key {
                    b"ca" => c.trusted_ca = v,
                    b"cert" => c.cert = v,
                    _ => c.key = v,
                }
                seen_tls_only = Some(match key {
                    b"ca" => "ca",
                    b"cert" => "cert",
                    _ => "key",
                });
            }
            b"send" => {
                let bytes = match unescape(value) {
                    Ok(b) if b.is_empty() => return bad("empty"),
                    Ok(b) => b,
                    Err(why) => return bad(why),
                };
                if bytes.len() > MAX_SEND {
                    return bad("longer than 4096 bytes");
                }
                c.send = Some(bytes);
            }
            b"expect" => {
                c.expect = Some(match value.strip_prefix(b"~") {
                    Some(re) => {
                        let re = strip_quotes(re);
                        if re.is_empty() {
                            return bad("empty regex");
                        }
                        Expect::Regex(String::from_utf8_lossy(re).into_owned())
                    }
                    None => match unescape(value) {
                        Ok(b) if b.is_empty() => return bad("empty"),
                        Ok(b) => Expect::Prefix(b),
                        Err(why) => return bad(why),
                    },
                });
            }
            _ => return Err(CheckError::UnknownParameter(key.to_vec())),
        }
    }
    if !timeout_set && c.timeout_ms > c.interval_ms {
        c.timeout_ms = c.interval_ms;
    }
    if c.timeout_ms > c.interval_ms {
        return Err(CheckError::TimeoutOverInterval {
            timeout_ms: c.timeout_ms,
            interval_ms: c.interval_ms,
        });
    }
    if c.jitter_ms >= c.interval_ms {
        return Err(CheckError::JitterNotShorter {
            jitter_ms: c.jitter_ms,
            interval_ms: c.interval_ms,
        });
    }
    if let (Some(p), false) = (seen_http_only, c.kind.is_http()) {
        return Err(CheckError::NeedsHttp(p));
    }
    if let (Some(p), false) = (seen_tls_only, c.kind.uses_tls()) {
        return Err(CheckError::NeedsHttps(p));
    }
    if c.kind.is_http() {
        if c.send.is_some() {
            return Err(CheckError::NeedsStream("send"));
        }
        if c.expect.is_some() {
            return Err(CheckError::NeedsStream("expect"));
        }
    }
    if c.send.is_some() && c.expect.is_none() {
        return Err(CheckError::SendWithoutExpect);
    }
    if c.kind == Kind::Udp && c.send.is_none() {
        return Err(CheckError::UdpWithoutSend);
    }
    if c.cert.is_some() != c.key.is_some() {
        return Err(CheckError::CertWithoutKey);
    }
    if c.verify && c.trusted_ca.is_none() {
        return Err(CheckError::VerifyWithoutCa);
    }
    Ok(c)
}

impl CheckConf {
    /// The probe's HTTP request. `default_host` (the peer's address) is the `Host` header when
    /// `host=` is not given.
    pub fn request(&self, default_host: &str) -> Vec<u8> {
        if !self.kind.is_http() {
            // Stream checks send `send=` (or nothing: a connect, or a banner to read).
            return self.send.clone().unwrap_or_default();
        }
        let method = match self.method {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
        };
        let host = self.host.as_deref().unwrap_or(default_host);
        // HTTP/1.1 connections persist unless one side says otherwise.
        let connection = if self.keepalive {
            ""
        } else {
            "Connection: close\r\n"
        };
        format!(
            "{method} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: nginx-lb-check\r\n\
             Accept: */*\r\n{connection}\r\n",
            self.uri
        )
        .into_bytes()
    }

    /// The TLS server name to send: `host=` without a port, else the `server` line's name when
    /// it is a host name; never an IP address (SNI does not carry those). `None` when `sni=off`.
    pub fn sni_name(&self, server: &str) -> Option<String> {
        if !self.sni {
            return None;
        }
        self.host_name(server)
    }

    /// What `verify=on` checks the certificate against: the host name (as for SNI, whether or
    /// not SNI is sent), else the address the probe connects to (`peer_addr`, e.g.
    /// `127.0.0.1:8443` or `[::1]:8443`), which must then be in the certificate.
    pub fn verify_identity(&self, server: &str, peer_addr: &str) -> Option<Identity> {
        if let Some(name) = self.host_name(server) {
            return Some(Identity::Name(name));
        }
        let ip = peer_addr
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip())
            .or_else(|_| peer_addr.parse::<std::net::IpAddr>())
            .ok()?;
        Some(Identity::Ip(ip.to_string()))
    }

    /// `host=` without a port, else `server` when it is a host name, not an IP address.
    fn host_name(&self, server: &str) -> Option<String> {
        let name = strip_port(self.host.as_deref().unwrap_or(server));
        let is_ip = name.parse::<std::net::IpAddr>().is_ok() || name.starts_with('[');
        (!name.is_empty() && !is_ip).then(|| name.to_string())
    }
}

/// `host:port` → `host`; `[v6]:port` and bare names are returned as they are.
fn strip_port(s: &str) -> &str {
    if s.starts_with('[') {
        return s;
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_sni() {
        let c = parse("type=http uri=/health").unwrap();
        assert!(c.keepalive);
        assert_eq!(
            c.request("127.0.0.1:8080"),
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: nginx-lb-check\r\n\
              Accept: */*\r\n\r\n"
                .to_vec()
        );
        let c = parse("type=http uri=/health keepalive=off").unwrap();
        assert_eq!(
            c.request("127.0.0.1:8080"),
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: nginx-lb-check\r\n\
              Accept: */*\r\nConnection: close\r\n\r\n"
                .to_vec()
        );
        let c = parse("type=https host=api.example:8443 method=HEAD").unwrap();
        assert!(c
            .request("x")
            .starts_with(b"HEAD / HTTP/1.1\r\nHost: api.example:8443\r\n"));
        assert_eq!(c.sni_name("127.0.0.1:443").as_deref(), Some("api.example"));
        let c = parse("type=https").unwrap();
        assert_eq!(c.sni_name("127.0.0.1:443"), None);
        assert_eq!(
            c.sni_name("backend.test:443").as_deref(),
            Some("backend.test")
        );
        assert_eq!(c.sni_name("[::1]:443"), None);
        // verify=on checks a name when there is one (sent by SNI or not), else the address.
        let v = |c: &CheckConf, server: &str, addr: &str| c.verify_identity(server, addr);
        let name = |n: &str| Some(Identity::Name(n.into()));
        let ip = |n: &str| Some(Identity::Ip(n.into()));
        assert_eq!(
            v(&c, "backend.test:443", "10.0.0.1:443"),
            name("backend.test")
        );
        assert_eq!(v(&c, "127.0.0.1:443", "127.0.0.1:443"), ip("127.0.0.1"));
        assert_eq!(v(&c, "[::1]:443", "[::1]:443"), ip("::1"));
        let off = parse("type=https sni=off host=api.example").unwrap();
        assert_eq!(off.sni_name("x"), None);
        assert_eq!(
            v(&off, "127.0.0.1:443", "127.0.0.1:443"),
            name("api.example")
        );
        let c = parse("type=https sni=off host=a.example").unwrap();
        assert_eq!(c.sni_name("b.example"), None);
    }

    fn parse(line: &str) -> Result<CheckConf, CheckError> {
        let args: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
        parse_check(&args)
    }

    #[test]
    fn full_http_line() {
        let c = parse(
            "type=http interval=2s timeout=1s rise=2 fall=3 jitter=200ms uri=/health \
             host=api.example status=200-299,301 body=~ok|ready port=8080 default=down method=HEAD",
        )
        .unwrap();
        assert_eq!(c.kind, Kind::Http);
        assert_eq!(
            (c.interval_ms, c.timeout_ms, c.jitter_ms),
            (2000, 1000, 200)
        );
        assert_eq!((c.rise, c.fall), (2, 3));
        assert_eq!(c.uri, "/health");
        assert_eq!(c.host.as_deref(), Some("api.example"));
        assert!(c.status.contains(204) && c.status.contains(301) && !c.status.contains(302));
        assert_eq!(c.status.to_string(), "200-299,301");
        assert_eq!(c.body.as_deref(), Some("ok|ready"));
        let q = parse("type=http body=~\"ok|ready\"").unwrap();
        assert_eq!(q.body.as_deref(), Some("ok|ready"));
        assert_eq!(c.port, Some(8080));
        assert!(!c.default_up);
        assert_eq!(c.method, HttpMethod::Head);
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.kind, Kind::Tcp);
        assert!(c.status.contains(200) && c.status.contains(399) && !c.status.contains(400));
        assert!(c.default_up);
        // A short interval pulls the default timeout down with it.
        let c = parse("interval=500ms").unwrap();
        assert_eq!(c.timeout_ms, 500);
    }

    #[test]
    fn times_as_nginx_reads_them() {
        // Every time parameter goes through nginx's syntax (see conf::time).
        let c = parse("type=http interval=1m30s timeout=1h jitter=1s500ms keepalive_time=1d")
            .unwrap_err();
        assert_eq!(
            c,
            CheckError::TimeoutOverInterval {
                timeout_ms: 3_600_000,
                interval_ms: 90_000
            }
        );
        let c =
            parse("type=http interval=1h timeout=1m30s jitter=1s500ms keepalive_time=1d").unwrap();
        assert_eq!(
            (
                c.interval_ms,
                c.timeout_ms,
                c.jitter_ms,
                c.keepalive_time_ms
            ),
            (3_600_000, 90_000, 1500, 86_400_000)
        );
        // A bare number is seconds.
        assert_eq!(parse("interval=10").unwrap().interval_ms, 10_000);
        let spaced: Vec<&[u8]> = vec![b"interval=1h 30m"];
        assert_eq!(parse_check(&spaced).unwrap().interval_ms, 5_400_000);
        for bad in [
            "interval=1s1m",
            "interval=1y",
            "timeout=ms",
            "jitter=",
            "interval=1.5s",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains("expected a time"), "{bad}: {err}");
        }
    }

    #[test]
    fn errors_name_the_parameter() {
        let cases = [
            ("type=smtp", "\"type\""),
            ("rise=0", "\"rise\""),
            ("fall=0", "\"fall\""),
            ("fall=x", "\"fall\""),
            // Digits only, as nginx's own directives read numbers (Rust's parse takes a `+`).
            ("rise=+2", "\"rise\""),
            ("port=+80", "\"port\""),
            ("type=http status=+200", "\"status\""),
            ("type=http status=200-+299", "\"status\""),
            ("interval=0", "\"interval\""),
            ("interval=-1s", "\"interval\""),
            ("timeout=abc", "\"timeout\""),
            (
                "interval=1s timeout=2s",
                "\"timeout\" (2000ms) must not be longer",
            ),
            ("type=http uri=health", "\"uri\""),
            ("type=http status=200-99", "\"status\""),
            ("type=http status=600", "\"status\""),
            ("type=http status=abc", "\"status\""),
            ("type=http body=ok", "\"body\""),
            ("colour=blue", "unknown parameter \"colour\""),
            ("justaword", "\"justaword\""),
            ("uri=/x", "\"uri\" needs type=http"),
            ("type=http verify=on", "\"verify\" needs type=https"),
            ("type=https verify=on", "needs \"ca=\""),
            ("type=https cert=/a", "\"cert\" and \"key\" go together"),
            ("port=0", "\"port\""),
            ("port=70000", "\"port\""),
            ("default=maybe", "\"default\""),
            ("interval=1s jitter=1s", "\"jitter\""),
            ("type=http keepalive=yes", "\"keepalive\""),
            ("keepalive=on", "\"keepalive\" needs type=http"),
            ("type=http keepalive_time=0", "\"keepalive_time\""),
            ("type=http keepalive_time=soon", "\"keepalive_time\""),
            ("keepalive_time=1m", "\"keepalive_time\" needs type=http"),
        ];
        for (line, want) in cases {
            let err = parse(line).unwrap_err().to_string();
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    /// The errors themselves, and the texts nginx prints after "lb_check: " (t/045 asserts
    /// most of them), each in full once.
    #[test]
    fn error_values_and_texts() {
        let bad = |k: &[u8], v: &[u8], expected| InvalidValue::new(k, v, expected).into();
        let cases: [(&str, CheckError, &str); 10] = [
            (
                "justaword",
                NotKeyValue(b"justaword".to_vec()).into(),
                "invalid parameter \"justaword\": expected key=value",
            ),
            (
                "interval=0",
                bad(b"interval", b"0", POSITIVE),
                "invalid value \"0\" for \"interval\": must be positive",
            ),
            (
                "type=http keepalive=yes",
                bad(b"keepalive", b"yes", ON_OFF),
                "invalid value \"yes\" for \"keepalive\": expected on or off",
            ),
            (
                "colour=blue",
                CheckError::UnknownParameter(b"colour".to_vec()),
                "unknown parameter \"colour\" (known: type, interval, timeout, rise, fall, \
                 jitter, uri, host, method, status, body, port, default, keepalive, \
                 keepalive_time, sni, verify, ca, cert, key)",
            ),
            (
                "interval=1s timeout=1500ms",
                CheckError::TimeoutOverInterval {
                    timeout_ms: 1500,
                    interval_ms: 1000,
                },
                "\"timeout\" (1500ms) must not be longer than \"interval\" (1000ms)",
            ),
            (
                "interval=500ms jitter=2s",
                CheckError::JitterNotShorter {
                    jitter_ms: 2000,
                    interval_ms: 500,
                },
                "\"jitter\" (2000ms) must be shorter than \"interval\" (500ms)",
            ),
            (
                "uri=/x",
                CheckError::NeedsHttp("uri"),
                "\"uri\" needs type=http or type=https",
            ),
            (
                "type=http sni=on",
                CheckError::NeedsHttps("sni"),
                "\"sni\" needs type=https or type=tls",
            ),
            (
                "type=https key=/k",
                CheckError::CertWithoutKey,
                "\"cert\" and \"key\" go together",
            ),
            (
                "type=https verify=on",
                CheckError::VerifyWithoutCa,
                "\"verify=on\" needs \"ca=\" (a file of trusted CA certificates)",
            ),
        ];
        for (line, err, text) in cases {
            assert_eq!(parse(line), Err(err), "{line}");
            assert_eq!(parse(line).unwrap_err().to_string(), text, "{line}");
        }
    }

    /// Random parameter lists never panic; whatever is accepted is consistent.
    #[test]
    fn random_arguments() {
        let keys = [
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
            "x",
            "",
        ];
        let values = [
            "http",
            "https",
            "tcp",
            "0",
            "1",
            "1000",
            "1001",
            "2s",
            "500ms",
            "1h",
            "99999999999999h",
            "-1",
            "/",
            "/health",
            "a b",
            "on",
            "off",
            "up",
            "down",
            "200-299,301",
            "599-100",
            "~ok",
            "~\"a\"",
            "GET",
            "HEAD",
            "65535",
            "65536",
            "",
            "=",
            "\u{7f}",
            "[::1]:80",
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as usize
        };
        for _ in 0..20_000 {
            let n = next() % 6;
            let args: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let k = keys[next() % keys.len()];
                    let v = values[next() % values.len()];
                    if next() % 10 == 0 {
                        k.as_bytes().to_vec()
                    } else {
                        format!("{k}={v}").into_bytes()
                    }
                })
                .collect();
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            match parse_check(&refs) {
                Ok(c) => {
                    assert!(c.rise > 0 && c.fall > 0 && c.interval_ms > 0 && c.timeout_ms > 0);
                    assert!(c.timeout_ms <= c.interval_ms && c.jitter_ms < c.interval_ms);
                    assert!(c.uri.starts_with('/'));
                    assert!(!c.verify || c.trusted_ca.is_some());
                    let _ = c.request("127.0.0.1:80");
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn stream_checks() {
        let args = |s: &'static str| s.split(' ').map(str::as_bytes).collect::<Vec<_>>();
        let c = parse_check(&args("type=tcp send=\"PING\r\n\" expect=~\"^\\+PONG\"")).unwrap();
        assert_eq!(c.send.as_deref(), Some(&b"PING\r\n"[..]));
        assert_eq!(c.expect, Some(Expect::Regex("^\\+PONG".into())));
        assert_eq!(c.request("ignored"), b"PING\r\n");
        // Hex escapes for binary protocols; a prefix without ~.
        let c = parse_check(&args("type=udp send=\\x00\\x01ab\\\\ expect=\\xff\\x0A")).unwrap();
        assert_eq!(c.kind, Kind::Udp);
        assert_eq!(c.send.as_deref(), Some(&[0, 1, b'a', b'b', b'\\'][..]));
        assert_eq!(c.expect, Some(Expect::Prefix(vec![0xff, 0x0a])));
        // A banner (expect without send) and TLS with its parameters.
        let c = parse_check(&args("type=tls expect=220 sni=off verify=on ca=/ca.pem")).unwrap();
        assert!(c.kind.uses_tls() && c.send.is_none() && !c.sni && c.verify);
        assert_eq!(parse_check(&args("type=tls")).unwrap().request("x"), b"");
        for (a, want) in [
            ("send=x", "\"send\" needs \"expect\""),
            ("type=udp", "type=udp needs \"send\""),
            ("type=udp expect=x", "type=udp needs \"send\""),
            (
                "type=http send=x expect=y",
                "\"send\" needs type=tcp, udp or tls",
            ),
            (
                "type=https expect=y",
                "\"expect\" needs type=tcp, udp or tls",
            ),
            ("send=\\xZZ expect=y", "\"send\": bad hex escape"),
            ("send=\\x4 expect=y", "\"send\": bad hex escape"),
            ("send=a\\q expect=y", "\"send\": unknown escape"),
            ("send=\"\" expect=y", "\"send\": empty"),
            ("send=x expect=~", "\"expect\": empty regex"),
            ("send=x expect=\\x", "\"expect\": bad hex escape"),
            (
                "type=tcp verify=on",
                "\"verify\" needs type=https or type=tls",
            ),
            (
                "type=udp send=x expect=y keepalive=on",
                "\"keepalive\" needs type=http",
            ),
            ("type=quic", "expected tcp, http, https, udp or tls"),
        ] {
            let e = parse_check(&args(a)).unwrap_err().to_string();
            assert!(e.contains(want), "{a}: {e}");
        }
        let long = format!("send={} expect=y", "a".repeat(MAX_SEND + 1));
        assert!(
            parse_check(&[long.split(' ').next().unwrap().as_bytes(), b"expect=y"])
                .unwrap_err()
                .to_string()
                .contains("longer than 4096 bytes")
        );
        assert!(Kind::Tcp.for_stream() && Kind::Udp.for_stream() && Kind::Tls.for_stream());
        assert!(!Kind::Http.for_stream() && !Kind::Https.for_stream());
        assert!(!Kind::Udp.for_http() && Kind::Tls.for_http());
    }

    #[test]
    fn prefix_verdicts() {
        assert_eq!(Expect::prefix_verdict(b"+PONG", b""), None);
        assert_eq!(Expect::prefix_verdict(b"+PONG", b"+PO"), None);
        assert_eq!(Expect::prefix_verdict(b"+PONG", b"-ERR"), Some(false));
        assert_eq!(Expect::prefix_verdict(b"+PONG", b"+PONG\r\n"), Some(true));
    }
}
