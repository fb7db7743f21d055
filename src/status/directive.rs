//! `lb_status [api=PATH];`: the directive's arguments.
//!
//! `api=PATH` names the location of an `lb_api write=on` to the HTML page, which then gives each
//! peer drain / down / up buttons and a weight field that call it. The page only ever talks to
//! its own server (its `Content-Security-Policy` allows nothing else), so PATH is a path on the
//! same server: it starts with one `/` (not `//`, which a browser reads as another host) and
//! holds no space, control character, quote, `<`, `>` or `\`.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusArgs {
    /// The `lb_api` location's prefix, ending in `/`.
    pub api: Option<String>,
}

/// Parses the arguments after `lb_status`; the error is the whole `[emerg]` message.
pub fn parse(args: &[&[u8]]) -> Result<StatusArgs, String> {
    let mut out = StatusArgs::default();
    for &a in args {
        let Some(v) = a.strip_prefix(b"api=") else {
            return Err(format!(
                "lb_status: invalid parameter \"{}\" (expected api=/path/ of an lb_api location)",
                a.escape_ascii()
            ));
        };
        if out.api.is_some() {
            return Err("lb_status: \"api\" is given twice".into());
        }
        let bad = |why: &str| {
            Err(format!(
                "lb_status: invalid api=\"{}\": {why}",
                v.escape_ascii()
            ))
        };
        if !v.starts_with(b"/") || v.starts_with(b"//") {
            return bad("expected a path on this server, starting with one \"/\"");
        }
        if let Some(&c) = v
            .iter()
            .find(|&&c| c <= b' ' || c >= 0x7f || b"\"'<>\\`".contains(&c))
        {
            return bad(&format!(
                "the character {:?} is not allowed",
                char::from(c).escape_default().to_string()
            ));
        }
        let mut path = String::from_utf8_lossy(v).into_owned();
        if !path.ends_with('/') {
            path.push('/');
        }
        out.api = Some(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_path() {
        assert_eq!(parse(&[]).unwrap(), StatusArgs::default());
        assert_eq!(
            parse(&[b"api=/lb-api/"]).unwrap().api.as_deref(),
            Some("/lb-api/")
        );
        // The API's paths are relative to its prefix: a missing final slash is added.
        assert_eq!(
            parse(&[b"api=/admin/lb"]).unwrap().api.as_deref(),
            Some("/admin/lb/")
        );
    }

    #[test]
    fn refusals_name_the_value() {
        for (args, want) in [
            (&[&b"apu=/x/"[..]][..], "invalid parameter \"apu=/x/\""),
            (&[b"/lb-api/"], "invalid parameter \"/lb-api/\""),
            (&[b"api="], "invalid api=\"\": expected a path"),
            (
                &[b"api=lb-api/"],
                "invalid api=\"lb-api/\": expected a path",
            ),
            (
                &[b"api=//evil.example/"],
                "invalid api=\"//evil.example/\": expected a path",
            ),
            (
                &[b"api=http://x/"],
                "invalid api=\"http://x/\": expected a path",
            ),
            (&[b"api=/a\"b/"], "invalid api=\"/a\\\"b/\": the character"),
            (&[b"api=/a b/"], "invalid api=\"/a b/\": the character"),
            (&[b"api=/a/", b"api=/b/"], "\"api\" is given twice"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.starts_with("lb_status: "), "{err}");
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }
}
