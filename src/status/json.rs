//! The JSON rendering (the default format). Schema: see the README, section `lb_status`.

use core::fmt;

use super::snapshot::Snapshot;

pub fn render(s: &Snapshot) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(s).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

/// `{"error": "..."}` for 400 and 404 answers: a message, or an error's Display.
pub fn error(msg: &(impl fmt::Display + ?Sized)) -> Vec<u8> {
    let msg = msg.to_string();
    let mut out = serde_json::to_vec(&serde_json::json!({ "error": msg })).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::snapshot::tests::sample;

    #[test]
    fn round_trips_through_a_json_parser() {
        let out = render(&sample());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let u = &v["upstreams"][0];
        assert_eq!(u["name"], "back\"end\\1");
        let p = &u["peers"][1];
        assert_eq!(p["state"], "unhealthy");
        assert_eq!(p["responses"]["5xx"], 2);
        assert_eq!(p["health_checks"]["last_reason"], "HTTP 500 \"<oops>\"");
        assert_eq!(p["health_checks"]["last_passed"], false);
        assert!(v["upstreams"][1]["peers"][0]["health_checks"].is_null());
        assert_eq!(v["upstreams"][1]["peers"][0]["state"], "down");
    }

    #[test]
    fn error_body() {
        let v: serde_json::Value = serde_json::from_slice(&error("unknown \"x\"")).unwrap();
        assert_eq!(v["error"], "unknown \"x\"");
    }
}
