//! The status request's arguments: `?format=json|prometheus|html` (or `Accept: text/plain;
//! version=0.0.4` for Prometheus) and `?upstream=NAME`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Prometheus,
    Html,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub format: Format,
    pub upstream: Option<String>,
}

/// A status request that cannot be answered: its Display is the message of the 400 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "unknown format \"{}\" (expected json, prometheus or html)",
        .0.escape_ascii()
    )]
    UnknownFormat(Vec<u8>),
}

/// Parses the query string (`args`, without `?`) and the `Accept` header.
pub fn parse(args: &[u8], accept: Option<&[u8]>) -> Result<Query, QueryError> {
    let mut format = None;
    let mut upstream = None;
    for pair in args.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let v = unescape(v);
        match k {
            b"format" => {
                format = Some(match v.as_slice() {
                    b"json" => Format::Json,
                    b"prometheus" => Format::Prometheus,
                    b"html" => Format::Html,
                    other => return Err(QueryError::UnknownFormat(other.to_vec())),
                })
            }
            b"upstream" => upstream = Some(String::from_utf8_lossy(&v).into_owned()),
            _ => {}
        }
    }
    let format = format.unwrap_or_else(|| match accept {
        Some(a) if wants_prometheus(a) => Format::Prometheus,
        _ => Format::Json,
    });
    Ok(Query { format, upstream })
}

fn wants_prometheus(accept: &[u8]) -> bool {
    let a = String::from_utf8_lossy(accept).to_ascii_lowercase();
    a.contains("text/plain") && a.contains("version=0.0.4")
}

/// `%XX` and `+` decoding of a query value.
fn unescape(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'%' if i + 2 < v.len() => {
                // Two hex digits (from_str_radix alone would also take a sign: "%+1").
                let hex = Some(&v[i + 1..i + 3])
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| core::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(parse(b"", None).unwrap().format, Format::Json);
        assert_eq!(parse(b"format=html", None).unwrap().format, Format::Html);
        assert_eq!(
            parse(b"format=prometheus", None).unwrap().format,
            Format::Prometheus
        );
        let accept = b"text/plain; version=0.0.4; charset=utf-8";
        assert_eq!(parse(b"", Some(accept)).unwrap().format, Format::Prometheus);
        assert_eq!(
            parse(b"format=json", Some(accept)).unwrap().format,
            Format::Json
        );
        let err = parse(b"format=x%0aml", None).unwrap_err();
        assert_eq!(err, QueryError::UnknownFormat(b"x\nml".to_vec()));
        assert_eq!(
            err.to_string(),
            "unknown format \"x\\nml\" (expected json, prometheus or html)"
        );
    }

    #[test]
    fn upstream_filter() {
        let q = parse(b"upstream=back%20end&format=json", None).unwrap();
        assert_eq!(q.upstream.as_deref(), Some("back end"));
        assert_eq!(
            parse(b"x=1&upstream=a+b", None)
                .unwrap()
                .upstream
                .as_deref(),
            Some("a b")
        );
        assert_eq!(
            parse(b"upstream=100%", None).unwrap().upstream.as_deref(),
            Some("100%")
        );
        // %XX takes two hex digits: not a sign ("%+1" is no escape, its "+" a space).
        assert_eq!(
            parse(b"upstream=a%+1b", None).unwrap().upstream.as_deref(),
            Some("a% 1b")
        );
    }
}
