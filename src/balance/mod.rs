//! Peer selection, pure Rust: the algorithms and the rules that decide whether a peer may be
//! chosen. The nginx glue in `crate::shell` feeds them indices and reads shared state; nothing
//! here knows about nginx.

pub mod availability;
pub mod least_conn;
pub mod membership;
pub mod method;
pub mod outlier;
pub mod p2c;
pub mod panic;
pub mod slow_start;
pub mod smooth_wrr;

pub use availability::{Limits, Verdict};
pub use least_conn::{Fit, LeastConn};
pub use method::{Method, MethodConf};
pub use p2c::P2c;
pub use smooth_wrr::SmoothWrr;

/// The per-worker selection state of one peer list (primaries or backups) under the upstream's
/// method.
/// A plain tag (`repr(u8)`) rather than a niche in the variants' vectors: every pick matches
/// on it, and reading a tag is one load and compare.
#[derive(Debug, Clone)]
#[repr(u8)]
pub enum Selector {
    RoundRobin(SmoothWrr),
    LeastConn(LeastConn),
    P2c(P2c),
}

impl Selector {
    /// `weights[i]` = 0 leaves peer `i` out (a `down` server).
    pub fn new(method: Method, weights: &[u32], seed: u64) -> Selector {
        match method {
            Method::RoundRobin if weights.len() <= smooth_wrr::WALK_MAX_PEERS => {
                Selector::RoundRobin(SmoothWrr::walk(weights))
            }
            Method::RoundRobin => Selector::RoundRobin(SmoothWrr::new(weights)),
            Method::LeastConn => Selector::LeastConn(LeastConn::new(weights)),
            Method::P2c => Selector::P2c(P2c::new(weights, seed)),
        }
    }

    /// The selection state for a changed peer list: round-robin schedules are edited from
    /// the old ones (`SmoothWrr::edit`: a pass over the period), the rest built anew (least_conn
    /// and p2c build in O(peers)). `origin[i]` is new peer `i`'s index in the old list.
    pub fn follow(
        &self,
        method: Method,
        origin: &[Option<usize>],
        old_weights: &[u32],
        weights: &[u32],
        seed: u64,
    ) -> Selector {
        if let Selector::RoundRobin(rr) = self {
            if let Some(edited) = rr.edit(origin, old_weights, weights) {
                return Selector::RoundRobin(edited);
            }
        }
        Selector::new(method, weights, seed)
    }
}
