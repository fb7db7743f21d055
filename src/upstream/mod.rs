//! The nginx side of `lb_upstream`: the directive, the per-upstream tables built from nginx's own
//! `server` lines, and the peer hooks nginx calls for every request.
//!
//! - `directive.rs`: `lb_upstream` and the checks that it is the upstream's only method;
//! - `table.rs`: one upstream's peers and schedules, built at configuration time;
//! - `pick.rs`: `init_peer`, `get_peer` (where a peer is chosen) and `free_peer`.

pub mod directive;
pub mod pick;
pub mod table;

pub use directive::ngx_http_lb_module;
