//! ngx_http_lb_module: load balancing, health checks and monitoring for nginx in one dynamic
//! module.
//!
//! The crate has two halves. The pure core (argument parsing, algorithms, state machines,
//! renderers) never touches nginx and is what `cargo test` and the benchmarks exercise. The
//! nginx shell (`nginx` helpers and each feature's glue file) registers modules and directives
//! and calls into the core; it is compiled only with the `nginx` feature and never under
//! `cfg(test)`, so unit tests link without nginx.

pub mod headers;

#[cfg(all(feature = "nginx", not(test)))]
pub mod nginx;

// The table of nginx modules this shared object exports (`load_module` reads it).
#[cfg(all(feature = "nginx", not(test)))]
pub use headers::filter::ngx_http_lb_headers_filter_module;

#[cfg(all(feature = "nginx", not(test)))]
ngx::ngx_modules!(ngx_http_lb_headers_filter_module);
