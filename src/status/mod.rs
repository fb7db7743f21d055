//! `lb_status`: what the module knows, for people and monitoring systems.
//!
//! Pure parts: `snapshot` (plain data copied out of the shared records), `json`, `prometheus`
//! and `html` (renderers: functions of a snapshot), `query` (the request's arguments),
//! `directive` (`lb_status`'s own arguments),
//! `histogram` (the response-time buckets).
//! The nginx side (the content handler and the `$lb_*` variables) is in `crate::shell`.

pub mod directive;
pub mod histogram;
pub mod html;
pub mod json;
pub mod prometheus;
pub mod query;
pub mod snapshot;
pub mod stream;
