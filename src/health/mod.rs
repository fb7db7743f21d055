//! Active health checks (`lb_check`).
//!
//! Pure parts: `config` (the directive's parameters), `state` (rise/fall), `response` (reading a
//! probe's HTTP response), `reason` (why a probe failed, packed for shared memory).
//! nginx glue: `directive` (`lb_check`, regex and TLS context prepared at configuration time)
//! and `probe` (timers and non-blocking connections in each worker: where a probe is sent).

pub mod config;
pub mod reason;
pub mod response;
pub mod state;

#[cfg(all(feature = "nginx", not(test)))]
pub mod directive;
#[cfg(all(feature = "nginx", not(test)))]
pub mod probe;
