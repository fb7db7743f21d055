//! Directive values parsed the way nginx parses them, so that a value means the same in an
//! `lb_*` directive as in nginx's own, and the errors the directive parsers share. Pure Rust:
//! nothing here imports from the crate or nginx.
//!
//! (No `lb_*` directive takes a size, so there is no `ngx_parse_size` counterpart yet.)

pub mod error;
pub mod number;
pub mod time;
