//! `lb_status`: what the module knows, for people and monitoring systems.
//!
//! Pure parts: `snapshot` (plain data copied out of the shared records), `json`, `prometheus`
//! and `html` (renderers: functions of a snapshot), `query` (the request's arguments).
//! nginx glue: `handler` (the content handler, snapshotting the shared tables) and
//! `variables` (`$lb_peer`, `$lb_peer_state`, `$lb_upstream`).

pub mod html;
pub mod json;
pub mod prometheus;
pub mod query;
pub mod snapshot;

#[cfg(all(feature = "nginx", not(test)))]
pub mod handler;
#[cfg(all(feature = "nginx", not(test)))]
pub mod variables;
