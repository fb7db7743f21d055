//! The `lb_state` file: the changes operators made through `lb_api` (peers' admin states and
//! weights, and the peers they added), so that they survive a restart or a binary upgrade (a reload keeps them in shared memory anyway). JSON through serde,
//! written whole (temporary file, then rename) after each change, read once when nginx starts
//! with a fresh zone.

use serde::{Deserialize, Serialize};

use super::Admin;

/// The file's format version (version 1, without added peers, is read too).
pub const VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub version: u32,
    pub peers: Vec<SavedPeer>,
    /// Peers added through the API.
    #[serde(default)]
    pub added: Vec<SavedAdded>,
}

/// A peer added through the API, with its `server` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedAdded {
    pub upstream: String,
    /// `stream` for a peer of a `stream {}` upstream (as in `SavedPeer`); left out for http.
    #[serde(default, skip_serializing_if = "is_http")]
    pub kind: Kind,
    pub address: String,
    pub weight: u32,
    pub backup: bool,
    pub max_conns: u32,
    pub max_fails: u32,
    pub fail_timeout_ms: u64,
}

/// One peer an operator changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedPeer {
    pub upstream: String,
    /// `stream` for a peer of a `stream {}` upstream (an http and a stream upstream may share
    /// a name); left out for http, as in files written before stream upstreams existed.
    #[serde(default, skip_serializing_if = "is_http")]
    pub kind: Kind,
    pub address: String,
    #[serde(default, skip_serializing_if = "is_up")]
    pub admin: Admin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The fingerprint of the peer's `server` line when the change was made: a configuration
    /// that changed the line since wins over the saved change.
    pub line: u64,
}

fn is_up(a: &Admin) -> bool {
    *a == Admin::Up
}

/// Which proxy a saved peer's upstream serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Http,
    Stream,
}

fn is_http(k: &Kind) -> bool {
    *k == Kind::Http
}

/// Why a state file was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("not a state file ({0})")]
    Invalid(String),
    #[error("format version {0} (this module reads versions 1 to {VERSION})")]
    Version(u32),
    #[error("weight {1} of peer {0} is out of range (1 to {max})", max = super::MAX_WEIGHT)]
    Weight(String, u32),
}

/// Parses a state file's contents.
pub fn parse(bytes: &[u8]) -> Result<StateFile, StateError> {
    let f: StateFile =
        serde_json::from_slice(bytes).map_err(|e| StateError::Invalid(e.to_string()))?;
    if !(1..=VERSION).contains(&f.version) {
        return Err(StateError::Version(f.version));
    }
    for a in &f.added {
        if !(1..=super::MAX_WEIGHT).contains(&a.weight) {
            return Err(StateError::Weight(a.address.clone(), a.weight));
        }
        if a.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(StateError::Invalid(format!(
                "added peer \"{}\" is not an IP address and port",
                a.address.escape_default()
            )));
        }
    }
    for p in &f.peers {
        if let Some(w) = p.weight {
            if !(1..=super::MAX_WEIGHT).contains(&w) {
                return Err(StateError::Weight(p.address.clone(), w));
            }
        }
    }
    Ok(f)
}

/// The file's contents for `peers` (those with a change) and `added`.
pub fn render(peers: Vec<SavedPeer>, added: Vec<SavedAdded>) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(&StateFile {
        version: VERSION,
        peers,
        added,
    })
    .unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(admin: Admin, weight: Option<u32>) -> SavedPeer {
        SavedPeer {
            upstream: "u".into(),
            kind: Kind::Http,
            address: "10.0.0.1:80".into(),
            admin,
            weight,
            line: 42,
        }
    }

    #[test]
    fn round_trip() {
        let stream = SavedPeer {
            kind: Kind::Stream,
            ..peer(Admin::Down, None)
        };
        let peers = vec![peer(Admin::Drain, None), peer(Admin::Up, Some(3)), stream];
        let http_added = SavedAdded {
            upstream: "u".into(),
            kind: Kind::Http,
            address: "[::1]:8080".into(),
            weight: 2,
            backup: true,
            max_conns: 3,
            max_fails: 0,
            fail_timeout_ms: 30_000,
        };
        // A stream upstream of the same name adds the same address: another peer.
        let stream_added = SavedAdded {
            kind: Kind::Stream,
            ..http_added.clone()
        };
        let added = vec![http_added, stream_added];
        let text = render(peers.clone(), added.clone());
        let back = parse(&text).unwrap();
        assert_eq!((back.peers, back.added), (peers.clone(), added));
        let s = String::from_utf8(text).unwrap();
        assert_eq!(s.matches("\"kind\": \"stream\"").count(), 2, "{s}");
        // Version 1 (no added peers) is still read.
        let v1 = br#"{"version": 1, "peers": [{"upstream": "u", "address": "a", "line": 1}]}"#;
        assert_eq!(parse(v1).unwrap().added, []);
        let text = render(peers, vec![]);
        // The default state (and kind http) is left out of the file.
        let s = String::from_utf8(text).unwrap();
        assert_eq!(s.matches("\"admin\"").count(), 2, "{s}");
        assert_eq!(s.matches("\"kind\": \"stream\"").count(), 1, "{s}");
        assert_eq!(s.matches("\"kind\"").count(), 1, "{s}");
        // A peer without "kind" (files of earlier versions) is an http upstream's.
        assert_eq!(parse(v1).unwrap().peers[0].kind, Kind::Http);
    }

    #[test]
    fn corrupt_truncated_or_foreign_files_are_refused() {
        let text = render(vec![peer(Admin::Down, Some(2))], vec![]);
        for cut in [0, 1, text.len() / 2, text.len() - 3] {
            assert!(
                matches!(parse(&text[..cut]), Err(StateError::Invalid(_))),
                "{cut}"
            );
        }
        assert_eq!(
            parse(br#"{"version": 3, "peers": []}"#),
            Err(StateError::Version(3))
        );
        let added = |a: &str, w: u32| {
            format!(
                r#"{{"version": 2, "peers": [], "added": [{{"upstream": "u", "address": "{a}",
                "weight": {w}, "backup": false, "max_conns": 0, "max_fails": 1,
                "fail_timeout_ms": 10000}}]}}"#
            )
        };
        assert!(parse(added("10.0.0.1:80", 1).as_bytes()).is_ok());
        // An added peer without "kind" (files of earlier versions) is an http upstream's.
        assert_eq!(
            parse(added("10.0.0.1:80", 1).as_bytes()).unwrap().added[0].kind,
            Kind::Http
        );
        assert!(matches!(
            parse(added("host:80", 1).as_bytes()),
            Err(StateError::Invalid(_))
        ));
        assert_eq!(
            parse(added("10.0.0.1:80", 0).as_bytes()),
            Err(StateError::Weight("10.0.0.1:80".into(), 0))
        );
        assert!(matches!(
            parse(br#"{"version": 1, "peers": [], "x": 1}"#),
            Err(StateError::Invalid(_))
        ));
        assert_eq!(
            parse(br#"{"version": 1, "peers": [{"upstream": "u", "address": "a", "weight": 0, "line": 1}]}"#),
            Err(StateError::Weight("a".into(), 0))
        );
    }
}
