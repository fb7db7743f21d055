//! Per-peer state shared by all workers, in one nginx shared-memory zone.
//!
//! `peer` is one peer's record (atomics only), `table` finds a peer's record by upstream name and
//! address so that state survives a reload; both are pure Rust. `crate::shell::zone` is the nginx
//! glue that creates the zone and hands each configured peer its record. `added` keeps the
//! definitions of peers added through `lb_api`.

pub mod added;
pub mod peer;
pub mod table;

pub use peer::PeerShared;
