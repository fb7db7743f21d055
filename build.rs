//! Turns what `nginx-sys` learnt from nginx's configure run into `cfg`s for our code:
//! `ngx_feature = "..."` (e.g. `http_ssl`, `http_v2`), `ngx_os = "..."`, and `ngx_resolve`
//! for an nginx (1.27.3 or later) whose upstreams can have `server ... resolve`.
//! Nothing else happens here; nginx itself is built by `nginx-sys`.
use std::env;

fn main() {
    for (cfg, var) in [("ngx_feature", "FEATURES"), ("ngx_os", "OS")] {
        println!("cargo::rerun-if-env-changed=DEP_NGINX_{var}_CHECK");
        println!("cargo::rerun-if-env-changed=DEP_NGINX_{var}");
        let check = env::var(format!("DEP_NGINX_{var}_CHECK")).unwrap_or_else(|_| "any()".into());
        println!("cargo::rustc-check-cfg=cfg({cfg}, values({check}))");
        if let Ok(values) = env::var(format!("DEP_NGINX_{var}")) {
            for v in values.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                println!("cargo::rustc-cfg={cfg}=\"{v}\"");
            }
        }
    }
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    println!("cargo::rustc-check-cfg=cfg(ngx_resolve)");
    let version: u64 = env::var("DEP_NGINX_VERSION_NUMBER")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if version >= 1_027_003 {
        println!("cargo::rustc-cfg=ngx_resolve");
    }
}
