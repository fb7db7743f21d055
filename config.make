# Makefile part of ngx_http_lb_module's nginx build (sourced by nginx's ./configure after
# `config`): how to make the static library the module's .so is linked from.
#
# cargo tracks its own sources and dependencies, so the library is a phony target: cargo runs on
# every `make modules` and does nothing when nothing changed. Features: the nginx shell, without
# `vendored` (this tree is the nginx) and without `export-modules` (nginx writes the module
# tables itself). --locked: the versions in Cargo.lock, or an error.

cat << END                                                    >> $NGX_MAKEFILE

.PHONY: $lb_staticlib

$lb_staticlib:
	NGINX_SOURCE_DIR="$lb_nginx_source_dir" \\
	NGINX_BUILD_DIR="$lb_nginx_build_dir" \\
	$NGX_CARGO rustc \\
		--manifest-path "$ngx_addon_dir/Cargo.toml" \\
		--lib --crate-type staticlib --release --locked \\
		--no-default-features --features nginx \\
		--target-dir "$lb_cargo_target_dir"

$NGX_OBJS${ngx_dirsep}ngx_http_lb_module$ngx_modext:	$lb_staticlib

END
