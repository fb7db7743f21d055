//! nginx's round-robin peer lists, http's and stream's, read alike.
//!
//! `ngx_http_upstream_rr_peers_t`/`_peer_t` and `ngx_stream_upstream_rr_peers_t`/`_peer_t`
//! (`ngx_*_upstream_round_robin.h`) are two declarations of one structure: every field this
//! module reads has the same name and type in both (checked field by field against the
//! bindgen types of nginx 1.22 and 1.28; they differ only in the compatibility padding at
//! their ends and in the SSL session fields' conditions, neither of which is read). The
//! traits below name those fields once, implemented for both by one macro, so that the code
//! that follows nginx's lists (`shell::resolve`) is written once for http and stream upstreams.

use nginx_sys::{
    ngx_atomic_t, ngx_http_upstream_rr_peer_t, ngx_http_upstream_rr_peers_t, ngx_int_t, ngx_str_t,
    ngx_uint_t, sockaddr, socklen_t, time_t,
};

/// One list of peers (the primaries, or the backups that `next` leads to).
pub trait RrList {
    type Peer: RrPeer;

    /// The list's first peer.
    ///
    /// # Safety
    /// `list` points to a live list.
    unsafe fn first(list: *const Self) -> *const Self::Peer;

    /// The backup list of a primary list (null for none, and for a backup list).
    ///
    /// # Safety
    /// As for `first`.
    unsafe fn next(list: *const Self) -> *mut Self;

    /// The list's read-write lock (in the upstream zone).
    ///
    /// # Safety
    /// As for `first`.
    unsafe fn rwlock(list: *mut Self) -> *mut ngx_atomic_t;

    /// nginx's counter of changes to the lists (null without a zone).
    ///
    /// # Safety
    /// As for `first`.
    #[cfg(ngx_resolve)]
    unsafe fn config(list: *const Self) -> *mut ngx_uint_t;

    /// The list's `server ... resolve` lines (templates nginx resolves at run time).
    ///
    /// # Safety
    /// As for `first`.
    #[cfg(ngx_resolve)]
    unsafe fn resolve(list: *const Self) -> *const Self::Peer;
}

/// One peer of a list, as its `server` line (or nginx's resolver) made it.
pub trait RrPeer {
    fn sockaddr(&self) -> *mut sockaddr;
    fn socklen(&self) -> socklen_t;
    fn name(&self) -> &ngx_str_t;
    fn server(&self) -> &ngx_str_t;
    fn weight(&self) -> ngx_int_t;
    fn max_fails(&self) -> ngx_uint_t;
    fn fail_timeout(&self) -> time_t;
    fn max_conns(&self) -> ngx_uint_t;
    fn down(&self) -> bool;
    /// Made by nginx's resolver from a `server NAME resolve` line.
    fn resolved(&self) -> bool;
    fn next(&self) -> *const Self;
}

macro_rules! rr_lists {
    ($list:ty, $peer:ty) => {
        impl RrList for $list {
            type Peer = $peer;
            unsafe fn first(list: *const Self) -> *const $peer {
                // SAFETY: as required by the caller.
                unsafe { (*list).peer }
            }
            unsafe fn next(list: *const Self) -> *mut Self {
                // SAFETY: as required by the caller.
                unsafe { (*list).next }
            }
            unsafe fn rwlock(list: *mut Self) -> *mut ngx_atomic_t {
                // SAFETY: as required by the caller.
                unsafe { core::ptr::addr_of_mut!((*list).rwlock) }
            }
            #[cfg(ngx_resolve)]
            unsafe fn config(list: *const Self) -> *mut ngx_uint_t {
                // SAFETY: as required by the caller.
                unsafe { (*list).config }
            }
            #[cfg(ngx_resolve)]
            unsafe fn resolve(list: *const Self) -> *const $peer {
                // SAFETY: as required by the caller.
                unsafe { (*list).resolve }
            }
        }

        impl RrPeer for $peer {
            fn sockaddr(&self) -> *mut sockaddr {
                self.sockaddr
            }
            fn socklen(&self) -> socklen_t {
                self.socklen
            }
            fn name(&self) -> &ngx_str_t {
                &self.name
            }
            fn server(&self) -> &ngx_str_t {
                &self.server
            }
            fn weight(&self) -> ngx_int_t {
                self.weight
            }
            fn max_fails(&self) -> ngx_uint_t {
                self.max_fails
            }
            fn fail_timeout(&self) -> time_t {
                self.fail_timeout
            }
            fn max_conns(&self) -> ngx_uint_t {
                self.max_conns
            }
            fn down(&self) -> bool {
                self.down != 0
            }
            #[cfg(ngx_resolve)]
            fn resolved(&self) -> bool {
                !self.host.is_null()
            }
            #[cfg(not(ngx_resolve))]
            fn resolved(&self) -> bool {
                false
            }
            fn next(&self) -> *const Self {
                self.next
            }
        }
    };
}

rr_lists!(ngx_http_upstream_rr_peers_t, ngx_http_upstream_rr_peer_t);
#[cfg(ngx_feature = "stream")]
rr_lists!(
    nginx_sys::ngx_stream_upstream_rr_peers_t,
    nginx_sys::ngx_stream_upstream_rr_peer_t
);
