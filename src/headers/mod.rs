//! `lb_add_header`: response headers whose values may use nginx variables, for example to say
//! which backend served a request.
//!
//! `spec` is the pure part (argument checks, status rules); the header filter is in
//! `crate::shell::headers`.

pub mod spec;
