//! Small helpers shared by the nginx shell: turning nginx strings into byte slices, reading
//! directive arguments, reporting configuration errors the way nginx does, and looking at an
//! idle connection's socket.

use core::ffi::c_char;

use core::ptr;

use nginx_sys::{ngx_conf_t, ngx_int_t, ngx_str_t, NGX_LOG_EMERG};

/// nginx's `NGX_CONF_OK`.
/// nginx's return codes as `ngx_int_t`, written once.
pub const OK: ngx_int_t = nginx_sys::NGX_OK as ngx_int_t;
pub const ERROR: ngx_int_t = nginx_sys::NGX_ERROR as ngx_int_t;
pub const AGAIN: ngx_int_t = nginx_sys::NGX_AGAIN as ngx_int_t;
pub const BUSY: ngx_int_t = nginx_sys::NGX_BUSY as ngx_int_t;
pub const DONE: ngx_int_t = nginx_sys::NGX_DONE as ngx_int_t;
pub const DECLINED: ngx_int_t = nginx_sys::NGX_DECLINED as ngx_int_t;

/// The `data` of a timer event that has no connection. nginx's debug log names every timer
/// event it adds, fires or deletes by `ngx_event_ident(ev->data)`, the fd of the connection
/// `data` points at: with `debug` on in an nginx built `--with-debug`, a timer whose `data` is
/// null crashes the worker. nginx's own connection-less timers point at a dummy connection
/// with fd -1 (`ngx_cache_manager_process_cycle`'s `dumb`); so do ours.
pub fn no_connection() -> *mut core::ffi::c_void {
    static mut NO_CONNECTION: nginx_sys::ngx_connection_t = {
        // SAFETY: all zeroes is a valid `ngx_connection_t` (pointers, integers, bit fields),
        // as nginx's own static dummy is.
        let mut c: nginx_sys::ngx_connection_t = unsafe { core::mem::zeroed() };
        c.fd = -1;
        c
    };
    // Only its address is taken; nginx reads `fd` and never writes to it.
    ptr::addr_of_mut!(NO_CONNECTION) as *mut core::ffi::c_void
}

/// Logs one of the module's decisions at `debug` level, as nginx's C modules do with
/// `ngx_log_debug(NGX_LOG_DEBUG_HTTP, log, ...)`: the chosen peer and why, the outcome of an
/// attempt, probes, idle connections, API requests. Only in an nginx built `--with-debug`
/// (`ngx::log::DEBUG` is a constant: elsewhere nothing is compiled), and there the hot path
/// pays one test of the log's level (a load, an `and`, a branch not taken) unless `debug` is
/// on for that log (`error_log ... debug`, or `debug_connection`); the message is formatted out
/// of line, in `debug_write`. `$log` must be a live `*mut ngx_log_t`.
macro_rules! lb_debug {
    ($log:expr, $($arg:tt)+) => {
        if ngx::log::DEBUG {
            let log: *mut nginx_sys::ngx_log_t = $log;
            // (The callers are often inside `unsafe` blocks already.)
            #[allow(unused_unsafe)]
            // SAFETY: the caller passes a live log (a request's, a connection's, the cycle's).
            let on = unsafe { $crate::shell::nginx::debug_on(log) };
            if on {
                #[allow(unused_unsafe)]
                // SAFETY: as above.
                let () = unsafe { $crate::shell::nginx::debug_write(log, format_args!($($arg)+)) };
            }
        }
    };
}
pub(crate) use lb_debug;

/// Whether `log` takes the module's `debug` lines (nginx's `NGX_LOG_DEBUG_HTTP` bit).
///
/// # Safety
/// `log` is a live nginx log.
#[inline(always)]
pub unsafe fn debug_on(log: *const nginx_sys::ngx_log_t) -> bool {
    // SAFETY: as required by the caller.
    unsafe { (*log).log_level & nginx_sys::NGX_LOG_DEBUG_HTTP as usize != 0 }
}

/// Formats and writes one `debug` line (see `lb_debug!`): out of line and cold, so that the
/// formatting machinery stays out of the callers' hot code.
///
/// # Safety
/// `log` is a live nginx log.
#[cold]
#[inline(never)]
pub unsafe fn debug_write(log: *mut nginx_sys::ngx_log_t, args: core::fmt::Arguments<'_>) {
    let mut buf = [const { core::mem::MaybeUninit::<u8>::uninit() }; ngx::log::LOG_BUFFER_SIZE];
    let message = ngx::log::write_fmt(&mut buf, args);
    // SAFETY: as required by the caller; `message` lives until the call returns.
    unsafe { ngx::log::log_debug(log, 0, message) };
}

/// nginx's cached monotonic clock, ms (updated by the event loop; no system call).
#[inline]
pub fn now_ms() -> u64 {
    // SAFETY: nginx updates its cached clock in the same (single) thread that runs us.
    unsafe { ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_current_msec)) as u64 }
}

/// This process's pid.
#[inline]
pub fn pid() -> u32 {
    // SAFETY: set by nginx when the process starts, read in the same thread.
    unsafe { ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_pid)) as u32 }
}

/// Whether this process serves requests: a worker, or nginx with `master_process off`.
pub fn serves_requests() -> bool {
    // SAFETY: set by nginx before it calls any of our process hooks.
    let kind = unsafe { ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_process)) } as u32;
    kind == nginx_sys::NGX_PROCESS_WORKER || kind == nginx_sys::NGX_PROCESS_SINGLE
}

/// This worker's place among the configuration's workers: (`ngx_worker`, `worker_processes`),
/// (0, 1) with `master_process off`. Kept by a respawned worker; the same in every generation.
pub fn worker_share() -> (usize, usize) {
    if !serves_requests() {
        return (0, 1);
    }
    // SAFETY: plain reads of nginx's process globals and of the cycle's core configuration,
    // which exists in a running worker.
    unsafe {
        let cycle = nginx_sys::ngx_cycle;
        let kind = ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_process)) as u32;
        if kind == nginx_sys::NGX_PROCESS_SINGLE || cycle.is_null() {
            return (0, 1);
        }
        let ctx = (*cycle).conf_ctx;
        let index = (*ptr::addr_of!(nginx_sys::ngx_core_module)).index;
        let ccf = *ctx.add(index) as *const nginx_sys::ngx_core_conf_t;
        let workers = if ccf.is_null() {
            1
        } else {
            (*ccf).worker_processes.max(1) as usize
        };
        let worker = ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_worker)) as usize;
        (worker, workers)
    }
}

/// Whether this worker is shutting down (graceful exit, quit or terminate).
pub fn exiting() -> bool {
    // SAFETY: plain reads of nginx's process flags, set by its signal handling in this process.
    unsafe {
        ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_exiting)) != 0
            || ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_quit)) != 0
            || ptr::read_volatile(ptr::addr_of!(nginx_sys::ngx_terminate)) != 0
    }
}

pub const CONF_OK: *mut c_char = core::ptr::null_mut();
/// nginx's `NGX_CONF_ERROR`.
pub const CONF_ERROR: *mut c_char = ngx::core::NGX_CONF_ERROR as *mut c_char;

/// The bytes of an nginx string.
///
/// # Safety
/// `s.data` must point to `s.len` readable bytes (or `len` is 0) that outlive the result.
pub unsafe fn bytes<'a>(s: &ngx_str_t) -> &'a [u8] {
    if s.len == 0 || s.data.is_null() {
        &[]
    } else {
        // SAFETY: the caller guarantees `data` points to `len` live bytes.
        unsafe { core::slice::from_raw_parts(s.data, s.len) }
    }
}

/// The arguments of the directive being parsed, the directive's own name first.
///
/// # Safety
/// `cf` must be the `ngx_conf_t` nginx passed to a directive handler.
pub unsafe fn directive_args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: while a directive handler runs, `cf->args` is an array of `ngx_str_t`.
    unsafe {
        let args = (*cf).args;
        if args.is_null() || (*args).nelts == 0 {
            return &[];
        }
        core::slice::from_raw_parts((*args).elts as *const ngx_str_t, (*args).nelts)
    }
}

/// The arguments of the directive being parsed as byte slices, without the directive's name:
/// what the pure parsers take.
///
/// # Safety
/// `cf` must be the `ngx_conf_t` nginx passed to a directive handler.
pub unsafe fn directive_params<'a>(cf: *mut ngx_conf_t) -> Vec<&'a [u8]> {
    // SAFETY: directive arguments are nginx strings from the configuration pool.
    unsafe {
        directive_args(cf)
            .iter()
            .skip(1)
            .map(|a| bytes(a))
            .collect()
    }
}

/// Logs `[emerg] <msg> in <file>:<line>` and returns `NGX_CONF_ERROR`, so that `nginx -t`
/// fails naming the directive and the bad value.
///
/// # Safety
/// `cf` must be the `ngx_conf_t` of the configuration being parsed.
pub unsafe fn conf_error(cf: *mut ngx_conf_t, msg: &str) -> *mut c_char {
    ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", msg);
    CONF_ERROR
}

/// What an idle connection's socket holds, seen by peeking one byte (nothing is read out).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// Nothing to read yet (EAGAIN): the connection is still quietly open.
    Nothing,
    /// The peek was interrupted (EINTR): nothing is known.
    Interrupted,
    /// Data, the end of the stream or an error is waiting: the connection is done with.
    Something,
}

/// Peeks one byte of connection `c`'s socket.
///
/// # Safety
/// `c` must be a live connection.
pub unsafe fn peek(c: *const nginx_sys::ngx_connection_t) -> Peek {
    let mut byte = 0u8;
    // SAFETY: `c->fd` is an open socket (guaranteed by the caller); one byte of `byte` is
    // writable.
    let n = unsafe {
        nginx_sys::recv(
            (*c).fd,
            &mut byte as *mut u8 as *mut core::ffi::c_void,
            1,
            nginx_sys::MSG_PEEK as _,
        )
    };
    if n != -1 {
        return Peek::Something;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(e) if e == nginx_sys::EAGAIN as i32 => Peek::Nothing,
        Some(e) if e == nginx_sys::EINTR as i32 => Peek::Interrupted,
        _ => Peek::Something,
    }
}
