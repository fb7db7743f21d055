//! Active health checks (`lb_check`).
//!
//! Pure parts: `config` (the directive's parameters), `state` (rise/fall), `response` (reading a
//! probe's HTTP response), `reason` (why a probe failed, packed for shared memory).
//! The nginx side (`lb_check` and the probes on the event loop) is in `crate::shell`.

pub mod config;
pub mod due;
pub mod reason;
pub mod response;
pub mod schedule;
pub mod state;
