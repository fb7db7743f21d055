//! The `lb_state` file: the changes operators made through `lb_api`, so that they survive a
//! restart or a binary upgrade (a reload keeps them in shared memory anyway). JSON through serde,
//! written whole (temporary file, then rename) after each change, read once when nginx starts
//! with a fresh zone.

use serde::{Deserialize, Serialize};

use super::Admin;

/// The file's format version.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub version: u32,
    pub peers: Vec<SavedPeer>,
}

/// One peer an operator changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedPeer {
    pub upstream: String,
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

/// Why a state file was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("not a state file ({0})")]
    Invalid(String),
    #[error("format version {0} (this module reads version {VERSION})")]
    Version(u32),
    #[error("weight {1} of peer {0} is out of range (1 to {max})", max = super::MAX_WEIGHT)]
    Weight(String, u32),
}

/// Parses a state file's contents.
pub fn parse(bytes: &[u8]) -> Result<StateFile, StateError> {
    let f: StateFile =
        serde_json::from_slice(bytes).map_err(|e| StateError::Invalid(e.to_string()))?;
    if f.version != VERSION {
        return Err(StateError::Version(f.version));
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

/// The file's contents for `peers` (those with a change).
pub fn render(peers: Vec<SavedPeer>) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(&StateFile {
        version: VERSION,
        peers,
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
            address: "10.0.0.1:80".into(),
            admin,
            weight,
            line: 42,
        }
    }

    #[test]
    fn round_trip() {
        let peers = vec![peer(Admin::Drain, None), peer(Admin::Up, Some(3))];
        let text = render(peers.clone());
        assert_eq!(parse(&text).unwrap().peers, peers);
        // The default state is left out of the file.
        let s = String::from_utf8(text).unwrap();
        assert_eq!(s.matches("\"admin\"").count(), 1, "{s}");
    }

    #[test]
    fn corrupt_truncated_or_foreign_files_are_refused() {
        let text = render(vec![peer(Admin::Down, Some(2))]);
        for cut in [0, 1, text.len() / 2, text.len() - 3] {
            assert!(
                matches!(parse(&text[..cut]), Err(StateError::Invalid(_))),
                "{cut}"
            );
        }
        assert_eq!(
            parse(br#"{"version": 2, "peers": []}"#),
            Err(StateError::Version(2))
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
