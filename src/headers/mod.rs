//! `lb_add_header`: response headers whose values may use nginx variables, for example to say
//! which backend served a request.
//!
//! `spec` is the pure part (argument checks, status rules); `filter` is the nginx header filter.

pub mod spec;

#[cfg(all(feature = "nginx", not(test)))]
pub mod filter;
