//! ngx_http_lb_module: load balancing, health checks and monitoring for nginx in one dynamic
//! module.
//!
//! The crate has two halves. The pure core (argument parsing, algorithms, state machines,
//! renderers) never touches nginx and is what `cargo test` and the benchmarks exercise. The
//! nginx shell (`nginx` helpers and each feature's glue file) registers modules and directives
//! and calls into the core; it is compiled only with the `nginx` feature and never under
//! `cfg(test)`, so unit tests link without nginx.
//!
//! Where things are: `balance/` chooses peers (pure), `upstream/` is the nginx side of
//! `lb_upstream` (`upstream/pick.rs` is where a peer is chosen), `shm/` is the shared per-peer
//! state, `headers/` is `lb_add_header`.

pub mod balance;
pub mod conf;
pub mod headers;
pub mod health;
pub mod keepalive;
pub mod shm;
pub mod status;

#[cfg(test)]
mod noise_tests;

#[cfg(all(feature = "nginx", not(test)))]
pub mod nginx;
#[cfg(all(feature = "nginx", not(test)))]
pub mod upstream;

#[cfg(all(feature = "nginx", not(test)))]
pub use headers::filter::ngx_http_lb_headers_filter_module;
#[cfg(all(feature = "nginx", not(test)))]
pub use upstream::ngx_http_lb_module;

#[cfg(all(feature = "nginx", not(test)))]
mod exports {
    //! The tables `load_module` reads from this shared object: the modules, their names, and
    //! an empty order list (nginx then appends them after the built-in modules, which puts our
    //! header filter first in the filter chain). Written out by hand because ngx 0.5.1's
    //! `ngx_modules!` macro does not accept more than one module.
    use core::ffi::c_char;
    use core::ptr::{addr_of, null};

    use nginx_sys::ngx_module_t;

    use super::{ngx_http_lb_headers_filter_module, ngx_http_lb_module};

    #[no_mangle]
    #[allow(non_upper_case_globals)]
    pub static mut ngx_modules: [*const ngx_module_t; 3] = [
        addr_of!(ngx_http_lb_module),
        addr_of!(ngx_http_lb_headers_filter_module),
        null(),
    ];

    #[no_mangle]
    #[allow(non_upper_case_globals)]
    pub static mut ngx_module_names: [*const c_char; 3] = [
        c"ngx_http_lb_module".as_ptr(),
        c"ngx_http_lb_headers_filter_module".as_ptr(),
        null(),
    ];

    #[no_mangle]
    #[allow(non_upper_case_globals)]
    pub static mut ngx_module_order: [*const c_char; 1] = [null()];
}
