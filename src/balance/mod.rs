//! Peer selection, pure Rust: the algorithms and the rules that decide whether a peer may be
//! chosen. The nginx glue in `crate::upstream` feeds them indices and reads shared state; nothing
//! here knows about nginx.

pub mod availability;
pub mod method;
pub mod smooth_wrr;

pub use availability::{Limits, Verdict};
pub use method::Method;
pub use smooth_wrr::SmoothWrr;
