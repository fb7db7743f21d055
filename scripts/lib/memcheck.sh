# Shared by scripts/memcheck-*.sh: the front nginx under valgrind memcheck, its stop, and the
# search of valgrind's log for errors with a frame in our module. The caller defines `say` and
# `die` (exit 2) and sets `dir`, `nginx` and `pfront`; the front's configuration is
# $dir/front/nginx.conf and answers /status.
# shellcheck shell=bash

# Starts the front (single process, `master_process off`) under valgrind and waits until it
# answers; sets `vgpid` and `vglog`.
memcheck_start_front() {
    local supp=()
    [ -n "${MEMCHECK_SUPP:-}" ] && supp=("--suppressions=$MEMCHECK_SUPP")
    vglog=$dir/valgrind.log
    valgrind --tool=memcheck --error-exitcode=99 --track-origins=yes --num-callers=30 \
        --leak-check=no "${supp[@]}" --log-file="$vglog" \
        "$nginx" -p "$dir/front/" -c "$dir/front/nginx.conf" -e "$dir/front/logs/error.log" \
        -g 'daemon off; master_process off;' >"$dir/front/stdout" 2>&1 &
    vgpid=$!
    for _ in $(seq 120); do
        curl -sf -o /dev/null "http://127.0.0.1:$pfront/status" && break
        kill -0 "$vgpid" 2>/dev/null || die "front nginx exited (see $dir/front/logs/error.log, $vglog)"
        sleep 1
    done
    curl -sf -o /dev/null "http://127.0.0.1:$pfront/status" || die "front nginx does not answer"
}

# SIGQUIT to the front, and its exit; sets `rc` (valgrind's exit code).
memcheck_stop_front() {
    kill -QUIT "$vgpid" 2>/dev/null || true
    rc=""
    for _ in $(seq 120); do
        kill -0 "$vgpid" 2>/dev/null || { rc=0; wait "$vgpid" || rc=$?; break; }
        sleep 0.5
    done
    [ -n "$rc" ] || { kill -KILL "$vgpid" 2>/dev/null || true; die "front nginx did not exit after SIGQUIT"; }
}

# Prints valgrind's summary and the error blocks (description and stacks, up to the next blank
# line) with a frame in ngx_http_lb_module, and exits: 0 none, 1 some, 2 valgrind or nginx
# failed otherwise.
memcheck_report() {
    echo "valgrind exit: $rc; $(grep 'ERROR SUMMARY' "$vglog" | tail -1 | sed 's/^==[0-9]*== //')"
    local ours=$dir/errors-in-module.txt n
    n=$(awk -v out="$ours" '
        function flush() { if (block ~ /ngx_http_lb_module/) { print block > out; n++ } block = "" }
        { sub(/^==[0-9]+== ?/, "") }
        /^$/ { flush(); next }
        { block = block $0 "\n" }
        END { flush(); print n + 0 }
    ' "$vglog")
    : >>"$ours"
    echo "errors in our module: $n"
    if [ "$n" -gt 0 ]; then
        echo "(in $ours)"
        cat "$ours"
        exit 1
    fi
    [ "$rc" = 0 ] || [ "$rc" = 99 ] || exit 2
    exit 0
}
