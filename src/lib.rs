//! ngx_http_lb_module: load balancing, health checks and monitoring for nginx in one dynamic
//! module.
//!
//! The crate has two halves. The pure core (argument parsing, algorithms, state machines,
//! renderers) never touches nginx and is what `cargo test` and the benchmarks exercise. The
//! nginx shell (`nginx` helpers and each feature's glue file) registers modules and directives
//! and calls into the core; it is compiled only with the `nginx` feature and never under
//! `cfg(test)`, so unit tests link without nginx.
//!
//! Where things are: the core folders `balance/` (choosing peers), `health/` (rise/fall,
//! probe responses), `shm/` (the shared per-peer records), `status/` (snapshots and
//! renderers), `conf/`, `headers/` and `keepalive/` (argument parsers and bookkeeping) are pure
//! Rust; `shell/` is all that touches nginx (`shell/pick.rs` is where a peer is chosen) and
//! depends on the core, never the reverse. `src/README.md` draws the layers and data flow.

pub mod api;
pub mod balance;
pub mod conf;
pub mod headers;
pub mod health;
pub mod keepalive;
pub mod shm;
pub mod status;

#[cfg(test)]
mod layers_test;
#[cfg(test)]
mod noise_tests;

#[cfg(all(feature = "nginx", not(test)))]
pub mod shell;

#[cfg(all(feature = "nginx", not(test)))]
pub use modules::{ngx_http_lb_headers_filter_module, ngx_http_lb_module, ngx_lb_core_module};

#[cfg(all(feature = "nginx", not(test), ngx_feature = "stream"))]
pub use shell::l4::ngx_stream_lb_module;

#[cfg(all(feature = "nginx", not(test)))]
mod modules {
    //! The two nginx modules this library is: their contexts, directives and process hooks
    //! (each implemented in `shell`).
    use core::ffi::c_void;
    use core::ptr;

    use nginx_sys::{
        ngx_command_t, ngx_http_module_t, ngx_module_t, ngx_uint_t, NGX_CONF_1MORE, NGX_CONF_ANY,
        NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE12, NGX_CONF_TAKE23, NGX_HTTP_LIF_CONF,
        NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MODULE,
        NGX_HTTP_SRV_CONF, NGX_HTTP_SRV_CONF_OFFSET, NGX_HTTP_UPS_CONF,
    };

    use crate::shell::headers::{
        create_loc_conf, merge_loc_conf, postconfiguration, set_add_header,
    };
    use crate::shell::upstream::{
        create_main_conf, create_srv_conf, exit_process, init_main_conf, init_module, init_process,
        preconfiguration, set_lb_keepalive, set_lb_upstream,
    };

    static LB_CTX: ngx_http_module_t = ngx_http_module_t {
        preconfiguration: Some(preconfiguration),
        postconfiguration: None,
        create_main_conf: Some(create_main_conf),
        init_main_conf: Some(init_main_conf),
        create_srv_conf: Some(create_srv_conf),
        merge_srv_conf: None,
        create_loc_conf: Some(crate::shell::status::create_loc_conf),
        merge_loc_conf: None,
    };

    static mut LB_COMMANDS: [ngx_command_t; 10] = [
        ngx_command_t {
            name: ngx::ngx_string!("lb_upstream"),
            type_: (NGX_HTTP_UPS_CONF | NGX_CONF_NOARGS | NGX_CONF_TAKE12) as ngx_uint_t,
            set: Some(set_lb_upstream),
            conf: NGX_HTTP_SRV_CONF_OFFSET,
            offset: 0,
            post: ptr::null_mut(),
        },
        ngx_command_t {
            name: ngx::ngx_string!("lb_check"),
            type_: (NGX_HTTP_UPS_CONF | NGX_CONF_ANY) as ngx_uint_t,
            set: Some(crate::shell::check::set_lb_check_http),
            conf: NGX_HTTP_SRV_CONF_OFFSET,
            offset: 0,
            post: ptr::null_mut(),
        },
        ngx_command_t {
            name: ngx::ngx_string!("lb_keepalive"),
            type_: (NGX_HTTP_UPS_CONF | NGX_CONF_1MORE) as ngx_uint_t,
            set: Some(set_lb_keepalive),
            conf: NGX_HTTP_SRV_CONF_OFFSET,
            offset: 0,
            post: ptr::null_mut(),
        },
        ngx_command_t {
            name: ngx::ngx_string!("lb_panic"),
            type_: (NGX_HTTP_UPS_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
            set: Some(crate::shell::upstream::set_lb_panic),
            conf: NGX_HTTP_SRV_CONF_OFFSET,
            offset: 0,
            post: ptr::null_mut(),
        },
        ngx_command_t {
            name: ngx::ngx_string!("lb_outlier"),
            type_: (NGX_HTTP_UPS_CONF | NGX_CONF_ANY) as ngx_uint_t,
            set: Some(crate::shell::upstream::set_lb_outlier),
            conf: NGX_HTTP_SRV_CONF_OFFSET,
            offset: 0,
            post: ptr::null_mut(),
        },
        ngx_command_t {
            name: ngx::ngx_string!("lb_slow_start"),
            type_: (NGX_HTTP_UPS_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
            set: Some(crate::shell::upstream::set_lb_slow_start),
            conf: NGX_HTTP_SRV_CONF_OFFSET,
            offset: 0,
            post: ptr::null_mut(),
        },
        ngx_command_t {
            name: ngx::ngx_string!("lb_status"),
            type_: (NGX_HTTP_LOC_CONF | NGX_CONF_ANY) as ngx_uint_t,
            set: Some(crate::shell::status::set_lb_status),
            conf: NGX_HTTP_LOC_CONF_OFFSET,
            offset: 0,
            post: ptr::null_mut(),
        },
        ngx_command_t {
            name: ngx::ngx_string!("lb_api"),
            type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS | NGX_CONF_TAKE1) as ngx_uint_t,
            set: Some(crate::shell::api::set_lb_api),
            conf: 0,
            offset: 0,
            post: ptr::null_mut(),
        },
        ngx_command_t {
            name: ngx::ngx_string!("lb_state"),
            type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
            set: Some(crate::shell::api::set_lb_state),
            // The http block's main conf array: our MainConf.
            conf: 0,
            offset: 0,
            post: ptr::null_mut(),
        },
        ngx_command_t::empty(),
    ];

    /// The balancer module: `lb_upstream`, `lb_check`, `lb_keepalive`, `lb_status`, `lb_api`.
    ///
    /// Built by nginx's `./configure --add-dynamic-module` (`config`), nginx writes the module
    /// tables itself, in C, naming the modules: they must then be exported under these names.
    #[used]
    #[allow(non_upper_case_globals)]
    #[cfg_attr(not(feature = "export-modules"), no_mangle)]
    pub static mut ngx_http_lb_module: ngx_module_t = ngx_module_t {
        ctx: ptr::addr_of!(LB_CTX) as *mut c_void,
        commands: ptr::addr_of_mut!(LB_COMMANDS) as *mut ngx_command_t,
        type_: NGX_HTTP_MODULE as ngx_uint_t,
        init_module: Some(init_module),
        init_process: Some(init_process),
        exit_process: Some(exit_process),
        ..ngx_module_t::default()
    };

    static HEADERS_CTX: ngx_http_module_t = ngx_http_module_t {
        preconfiguration: None,
        postconfiguration: Some(postconfiguration),
        create_main_conf: None,
        init_main_conf: None,
        create_srv_conf: None,
        merge_srv_conf: None,
        create_loc_conf: Some(create_loc_conf),
        merge_loc_conf: Some(merge_loc_conf),
    };

    static mut HEADERS_COMMANDS: [ngx_command_t; 2] = [
        ngx_command_t {
            name: ngx::ngx_string!("lb_add_header"),
            type_: (NGX_HTTP_MAIN_CONF
                | NGX_HTTP_SRV_CONF
                | NGX_HTTP_LOC_CONF
                | NGX_HTTP_LIF_CONF
                | NGX_CONF_TAKE23) as ngx_uint_t,
            set: Some(set_add_header),
            conf: NGX_HTTP_LOC_CONF_OFFSET,
            offset: 0,
            post: ptr::null_mut(),
        },
        ngx_command_t::empty(),
    ];

    static mut CORE_CTX: nginx_sys::ngx_core_module_t = nginx_sys::ngx_core_module_t {
        name: ngx::ngx_string!("lb"),
        create_conf: Some(crate::shell::conf::create_core_conf),
        init_conf: None,
    };

    /// A core module without directives: its configuration is the cycle's `MainConf`, made
    /// before any block is parsed, so that `http {}` and `stream {}` upstreams share it.
    #[used]
    #[allow(non_upper_case_globals)]
    #[cfg_attr(not(feature = "export-modules"), no_mangle)]
    pub static mut ngx_lb_core_module: ngx_module_t = ngx_module_t {
        ctx: ptr::addr_of_mut!(CORE_CTX) as *mut c_void,
        commands: ptr::null_mut(),
        type_: nginx_sys::NGX_CORE_MODULE as ngx_uint_t,
        ..ngx_module_t::default()
    };

    /// The header filter module: `lb_add_header`.
    #[used]
    #[allow(non_upper_case_globals)]
    #[cfg_attr(not(feature = "export-modules"), no_mangle)]
    pub static mut ngx_http_lb_headers_filter_module: ngx_module_t = ngx_module_t {
        ctx: ptr::addr_of!(HEADERS_CTX) as *mut c_void,
        commands: ptr::addr_of_mut!(HEADERS_COMMANDS) as *mut ngx_command_t,
        type_: NGX_HTTP_MODULE as ngx_uint_t,
        ..ngx_module_t::default()
    };
}

#[cfg(all(feature = "nginx", feature = "export-modules", not(test)))]
mod exports {
    //! The tables `load_module` reads from this shared object: the modules, their names, and
    //! an empty order list (nginx then appends them after the built-in modules, which puts our
    //! header filter first in the filter chain). Written out by hand because ngx 0.5.1's
    //! `ngx_modules!` macro does not accept more than one module.
    //!
    //! Only for the cargo-built `cdylib` (feature `export-modules`, a default): nginx's own
    //! build (`config`) generates the same three tables in `objs/ngx_http_lb_module_modules.c`
    //! from `ngx_module_name` and an empty `ngx_module_order`, and links them with our
    //! static library.
    use core::ffi::c_char;
    use core::ptr::{addr_of, null};

    use nginx_sys::ngx_module_t;

    use super::{ngx_http_lb_headers_filter_module, ngx_http_lb_module, ngx_lb_core_module};

    // The stream module is listed whether or not nginx has `stream {}`: nginx only calls a
    // stream module's hooks from its stream block, and the module refers to no symbol of
    // nginx's stream code (those are looked up when a directive needs them, see
    // `shell::l4`), so the shared object loads into an nginx without stream too.
    #[cfg(ngx_feature = "stream")]
    const N: usize = 5;
    #[cfg(not(ngx_feature = "stream"))]
    const N: usize = 4;

    #[no_mangle]
    #[allow(non_upper_case_globals)]
    pub static mut ngx_modules: [*const ngx_module_t; N] = [
        addr_of!(ngx_http_lb_module),
        addr_of!(ngx_http_lb_headers_filter_module),
        addr_of!(ngx_lb_core_module),
        #[cfg(ngx_feature = "stream")]
        addr_of!(crate::ngx_stream_lb_module),
        null(),
    ];

    #[no_mangle]
    #[allow(non_upper_case_globals)]
    pub static mut ngx_module_names: [*const c_char; N] = [
        c"ngx_http_lb_module".as_ptr(),
        c"ngx_http_lb_headers_filter_module".as_ptr(),
        c"ngx_lb_core_module".as_ptr(),
        #[cfg(ngx_feature = "stream")]
        c"ngx_stream_lb_module".as_ptr(),
        null(),
    ];

    #[no_mangle]
    #[allow(non_upper_case_globals)]
    pub static mut ngx_module_order: [*const c_char; 1] = [null()];
}
