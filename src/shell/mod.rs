//! The nginx shell: everything that touches nginx, around the pure core.
//!
//! Dependencies go one way: the shell uses the core folders (`balance`, `conf`, `health`,
//! `shm`, `status`, `headers`, `keepalive`), which never use the shell; the crate root holds the
//! module table. Within the shell:
//!
//! - `nginx`: small helpers for nginx strings, directive arguments and sockets;
//! - `conf`: the configuration types (`SrvConf`, `MainConf`) and their accessors;
//! - `upstream`: the directives of an `upstream {}` block and the module's configuration hooks;
//! - `table`: one upstream's peers as built from nginx's `server` lines;
//! - `pick`: `init_peer`, `get_peer` (where a peer is chosen) and `free_peer`;
//! - `zone`: the shared-memory zone, committed with the configuration;
//! - `resolve`: peers of `server NAME resolve`, following nginx's resolver at run time, and
//!   peers added by `lb_api`, for http and stream upstreams alike (`rr`: nginx's round-robin
//!   lists of both, read through one trait);
//! - `check` and `probe`: `lb_check` and the probes on each worker's event loop;
//! - `keepalive`: `lb_keepalive`'s idle connections;
//! - `api`: `lb_api`, runtime control of peers (the requests are parsed in `crate::api`);
//! - `status` and `variables`: `lb_status` and `$lb_peer`, `$lb_peer_state`, `$lb_upstream`;
//! - `stream`: large answers (`lb_status`, `lb_api`'s lists) sent a chunk per event;
//! - `headers`: the `lb_add_header` filter;
//! - `l4`: `stream {}` upstreams (TCP/UDP), sharing everything below the nginx glue.

pub mod api;
pub mod check;
pub mod conf;
pub mod headers;
pub mod keepalive;
#[cfg(ngx_feature = "stream")]
pub mod l4;
pub mod nginx;
pub mod pick;
pub mod probe;
pub mod resolve;
pub mod rr;
pub mod status;
pub mod stream;
pub mod table;
pub mod upstream;
pub mod variables;
pub mod zone;
