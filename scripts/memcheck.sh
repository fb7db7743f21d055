#!/usr/bin/env bash
# Runs suites of t/ with every nginx process under valgrind memcheck: masters, workers, cache
# and helper processes, `nginx -t` and the daemonizing parent alike (one valgrind log per
# process, --trace-children=yes). Then reads every log and fails on any error valgrind reports
# that scripts/memcheck.supp does not suppress: invalid read/write/free, use of uninitialised
# memory, a definite leak, or a crash (SIGSEGV, SIGBUS, SIGABRT, ...). Each error is printed
# with its stacks and the process's command line, marked "in our module" when a frame is in
# ngx_http_lb_module (else "outside our module": nginx, OpenSSL or libc alone; a known false
# positive goes into scripts/memcheck.supp with its reason, never one with a frame of ours).
# The last line is `memcheck: N processes checked, E errors`.
#
#   scripts/memcheck.sh [t/FILE...]    the default set (below; 8-12 minutes on 2 cores) or FILEs
#   scripts/memcheck.sh --short        the short set run by scripts/test.sh (about a minute)
#   scripts/memcheck.sh --self-test    checks the log reader on synthetic logs (a few seconds)
#   scripts/memcheck.sh --check DIR    reads the valgrind logs DIR/vg.*.log again, runs nothing
#
# Uses $TEST_NGINX_BINARY and $TEST_NGINX_LB_MODULE (default build/sbin/nginx and
# build/modules/ngx_http_lb_module.so, as the tests do; builds nothing). The wrapper that the
# tests run as their nginx, and the logs, are in build/memcheck/ (emptied at the start; kept).
# `nginx -v`/`-V` alone (no configuration, no module) runs without valgrind.
# Environment: MEMCHECK_JOBS (prove -j, default 2); MEMCHECK_SUPP (suppression file, default
# scripts/memcheck.supp); for the tests, at valgrind's speed: TEST_NGINX_START_TIMEOUT (default
# here 30 s), TEST_NGINX_TIMEOUT (a request's, default here 20 s), TEST_NGINX_TIMEOUT_FACTOR
# (default here 3: the waits of Test::LB::Server).
# Tests may fail at valgrind's speed (20-50 times slower: probe timeouts of 100 ms, TLS
# handshakes, p2c's response times, slow-start ramps, request gaps): their suites are named, but
# only memory errors fail the run (`prove t/` is the functional verdict).
# Exit: 0 no error, 1 errors (or no process checked), 2 setup failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/lib/common.sh
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

# The default set: every suite but three, the longest first so that prove -j2 ends both halves
# together: 12 minutes on this 2-core machine while another build and test run shared it
# (load 2-4), less when it is idle. Left out (each can be named on the command line):
# t/000-runner-selftest.t (tests the runner), t/046-time-syntax.t (~350 `nginx -t` runs for the
# time parser, which `cargo test` covers: 18 minutes alone), t/100-parity.t (t/020's picks
# compared with nginx's own: 2-4 minutes).
default_set=(
    t/010-add-header.t t/040-health-check.t t/110-resolve.t t/021-upstream-workers.t
    t/045-health-bad-config.t t/061-probe-fds.t t/020-upstream-rr.t t/101-parity-workers.t
    t/030-upstream-bad-config.t t/120-api.t t/132-slow-start.t t/050-status.t
    t/121-api-members.t t/041-health-workers.t t/042-health-share.t t/080-keepalive.t
    t/063-reload-state.t t/102-parity-reload.t t/130-panic.t t/070-methods.t
    t/090-example-confs.t t/111-resolve-bad-config.t t/062-probe-keepalive-limit.t
    t/072-least-conn-busy.t t/060-reload.t t/131-outlier.t t/051-status-workers.t
    t/150-stream.t t/153-stream-check-types.t t/151-stream-check.t t/152-stream-check-workers.t
    t/154-stream-udp.t t/156-stream-resolve.t t/157-stream-api-add.t t/158-stream-parity.t
    t/064-reload-interval.t
)
# The short set (CI, about a minute): lb_status in every format with checks, a master with two
# workers through reloads and a kill -9, lb_api's changes and errors, lb_state.
short_set=(t/050-status.t t/060-reload.t t/120-api.t)

mode=run
files=()
while [ $# -gt 0 ]; do
    case $1 in
        --short) files+=("${short_set[@]}") ;;
        --self-test) mode=self-test ;;
        --check) mode=check; [ $# -ge 2 ] || die "--check needs a directory"; checkdir=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (see scripts/memcheck.sh --help)" ;;
        *) [ -f "$1" ] || die "no test file $1"; files+=("$1") ;;
    esac
    shift
done
[ ${#files[@]} -gt 0 ] || files=("${default_set[@]}")

# ------------------------------------------------------------------------------------------------
# The log reader: every $1/vg.*.log is one process. Prints each error block (after a heading with
# the pid, the command line and where the error is), then a summary, and as its last line
# `memcheck: N processes checked, E errors`. Returns 0 when E is 0, 1 otherwise.
#
# An error block is a paragraph of the log that starts with one of memcheck's error headings
# (a definite leak is one since --show-leak-kinds=definite). valgrind's own count of error
# contexts ("ERROR SUMMARY: n errors from m contexts") is checked against the blocks found: a
# process with more contexts than recognised blocks counts the difference as errors, and its
# log is named, so an error kind this reader does not know cannot pass silently. A process
# killed by SIGKILL (some tests kill workers) has no summary and no leak check; errors it
# reported before are counted all the same.
check_logs() {
    local d=$1 logs
    logs=$(find "$d" -maxdepth 1 -name 'vg.*.log' | sort)
    if [ -z "$logs" ]; then
        echo "memcheck: no valgrind log in $d"
        echo "memcheck: 0 processes checked, 1 errors"
        return 1
    fi
    # shellcheck disable=SC2086   # the names have no spaces (vg.PID.log under our directory)
    awk '
        function flush(   head, kind, where) {
            if (block == "") return
            head = block
            sub(/^Thread [0-9]+[^\n]*\n/, "", head)
            sub(/\n.*/, "", head)
            kind = ""
            if (head ~ /^(Invalid (read|write|free|alignment|size)|Mismatched (free|deallocation)|Conditional jump or move depends on uninitialised|Use of uninitialised value|Syscall param|Source and destination overlap|Argument .* of function .* has a fishy|Jump to the invalid address|Illegal memory pool address|realloc\(\) with size 0|Unaddressable byte)/)
                kind = "error"
            else if (head ~ / are definitely lost in loss record /)
                kind = "leak"
            else if (head ~ /^Process terminating with default action of signal [0-9]+ \(SIG(SEGV|BUS|ABRT|ILL|FPE|SYS|TRAP)\)/)
                kind = "crash"
            if (kind != "") {
                if (kind != "crash") found++
                else crashes++
                ours = (block ~ /ngx_http_lb_module/)
                where = ours ? "IN OUR MODULE" : "outside our module"
                if (ours) n_ours++; else n_other++
                printf "---- pid %s, %s (%s): %s\n", pid, where, kind, cmd
                printf "%s\n", block
            }
            block = ""
        }
        function endfile() {
            if (pid == "") return
            flush()
            procs++
            if (!summary) {
                unfinished++
            } else if (contexts > found) {
                printf "---- pid %s: valgrind counts %d error contexts, %d recognised above;" \
                       " read %s\n\n", pid, contexts, found, file
                n_other += contexts - found
                found = contexts
            }
            errors += found + crashes
        }
        FNR == 1 {
            endfile()
            file = FILENAME; pid = FILENAME
            sub(/.*vg\./, "", pid); sub(/\.log$/, "", pid)
            cmd = ""; summary = 0; contexts = 0; found = 0; crashes = 0; block = ""
        }
        {
            line = $0
            if (line !~ /^==[0-9]+==/) next       # --PID-- notes, output of valgrind itself
            sub(/^==[0-9]+== ?/, "", line)
        }
        cmd == "" && line ~ /^Command: / { cmd = substr(line, 10) }
        line ~ /^ERROR SUMMARY: / {
            summary = 1
            if (match(line, /from [0-9]+ contexts/)) contexts = substr(line, RSTART + 5, RLENGTH - 14) + 0
        }
        line ~ /^[ \t]*$/ { flush(); next }
        { block = block line "\n" }
        END {
            endfile()
            printf "memcheck: %d valgrind logs; %d processes ended before valgrind'"'"'s" \
                   " summary (SIGKILL: no leak check)\n", procs, unfinished
            printf "memcheck: errors in our module: %d, outside our module: %d\n", n_ours, n_other
            printf "memcheck: %d processes checked, %d errors\n", procs, errors
            exit(errors > 0)
        }
    ' $logs
}

# ------------------------------------------------------------------------------------------------
# --self-test: the reader on synthetic logs: a clean process, a worker with an invalid read in
# our module, one with a definite leak allocated by our module, a crash, an error kind the reader
# does not know (only valgrind's count shows it), and a process killed before its summary.
self_test() {
    local d fails=0 out
    d=$(mktemp -d /tmp/memcheck-selftest.XXXXXX)
    summary() { printf '==%s== \n==%s== ERROR SUMMARY: %s errors from %s contexts (suppressed: 0 from 0)\n' "$1" "$1" "$2" "$2"; }
    head() { printf '==%s== Memcheck, a memory error detector\n==%s== Command: /x/nginx -p /x/t/servroot_selftest/ -c conf/nginx.conf\n==%s== \n' "$1" "$1" "$1"; }
    { head 100; summary 100 0; } >"$d/vg.100.log"
    expect() {  # $1: label, $2: expected exit status, $3: pattern the output must have
        local rc=0
        out=$(check_logs "$d") || rc=$?
        if [ "$rc" = "$2" ] && grep -q -- "$3" <<<"$out"; then
            say "self-test: $1: ok"
        else
            say "self-test: $1: FAILED (exit $rc, expected $2, output:)"; printf '%s\n' "$out" >&2
            fails=$((fails + 1))
        fi
    }
    expect "a clean process" 0 '^memcheck: 1 processes checked, 0 errors$'
    { head 101; cat <<'EOF'; summary 101 1; } >"$d/vg.101.log"
==101== Invalid read of size 8
==101==    at 0x5A1B2C3: ngx_http_lb_module::shell::pick::get_peer (in /x/modules/ngx_http_lb_module.so)
==101==    by 0x14A2B3: ngx_http_upstream_connect (ngx_http_upstream.c:1563)
==101==  Address 0x6e2f0a8 is 8 bytes after a block of size 16 alloc'd
==101==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==101==    by 0x5A1C000: alloc::alloc::alloc (in /x/modules/ngx_http_lb_module.so)
==101== 
EOF
    expect "an invalid read in our module" 1 '^---- pid 101, IN OUR MODULE (error)'
    expect "  ... and the count" 1 '^memcheck: 2 processes checked, 1 errors$'
    { head 102; cat <<'EOF'; summary 102 1; } >"$d/vg.102.log"
==102== HEAP SUMMARY:
==102==     in use at exit: 1,807 bytes in 9 blocks
==102== 
==102== 64 bytes in 1 blocks are definitely lost in loss record 3 of 9
==102==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==102==    by 0x5A1C000: <ngx_http_lb_module::shell::table::Upstream>::new (in /x/modules/ngx_http_lb_module.so)
==102==    by 0x1575FA: ngx_worker_process_init (ngx_process_cycle.c:763)
==102== 
==102== LEAK SUMMARY:
==102==    definitely lost: 64 bytes in 1 blocks
==102== 
EOF
    expect "a definite leak from our module" 1 '^---- pid 102, IN OUR MODULE (leak)'
    rm -f "$d/vg.101.log" "$d/vg.102.log"
    { head 103; cat <<'EOF'; summary 103 0; } >"$d/vg.103.log"
==103== Process terminating with default action of signal 11 (SIGSEGV)
==103==  Access not within mapped region at address 0x0
==103==    at 0x153A88: ngx_http_process_request (ngx_http_request.c:2100)
==103== 
EOF
    expect "a crash outside the module" 1 '^---- pid 103, outside our module (crash)'
    rm -f "$d/vg.103.log"
    { head 104; printf '==104== Some error memcheck may print one day\n==104==    at 0x1: f (a.c:1)\n'; summary 104 1; } >"$d/vg.104.log"
    expect "an unknown error kind (valgrind's count)" 1 'valgrind counts 1 error contexts, 0 recognised'
    rm -f "$d/vg.104.log"
    { head 105; printf '==105== Conditional jump or move depends on uninitialised value(s)\n==105==    at 0x5A1B2C3: lb_init (in /x/modules/ngx_http_lb_module.so)\n'; } >"$d/vg.105.log"
    expect "an error in a process killed before its summary" 1 'processes checked, 1 errors$'
    rm -f "$d/vg.105.log"
    { head 106; printf '==106== Warning: set address range perms: large range [0x59c8e000, 0x69c8e000) (defined)\n==106== \n'; summary 106 0; } >"$d/vg.106.log"
    expect "valgrind's warnings are not errors" 0 '^memcheck: 2 processes checked, 0 errors$'
    rm -rf "$d"
    [ "$fails" = 0 ] || { echo "memcheck: self-test: $fails checks failed"; return 1; }
    echo "memcheck: self-test passed"
}

case $mode in
    self-test) self_test; exit ;;
    check) [ -d "$checkdir" ] || die "no directory $checkdir"; check_logs "$checkdir"; exit ;;
esac

# ------------------------------------------------------------------------------------------------
need_packages valgrind perl libtest-base-perl python3 curl openssl
nginx=${TEST_NGINX_BINARY:-$root/build/sbin/nginx}
module=${TEST_NGINX_LB_MODULE:-$root/build/modules/ngx_http_lb_module.so}
case $nginx in /*) ;; *) nginx=$root/$nginx ;; esac
case $module in /*) ;; *) module=$root/$module ;; esac
[ -x "$nginx" ] || die "no nginx at $nginx (scripts/build.sh, or set TEST_NGINX_BINARY)"
[ -f "$module" ] || die "no module at $module (scripts/build.sh, or set TEST_NGINX_LB_MODULE)"
supp=${MEMCHECK_SUPP:-$root/scripts/memcheck.supp}
[ -f "$supp" ] || die "no suppression file $supp"
case $supp in /*) ;; *) supp=$root/$supp ;; esac

work=$root/build/memcheck
rm -rf "$work"
mkdir -p "$work/vg"
# The nginx the tests run: valgrind with the real nginx. The log name's %p is the pid: valgrind
# opens a new log in a forked child (a worker, the daemon) as well. --keep-debuginfo: nginx
# unloads the module (dlclose) when a worker destroys its cycle, before valgrind's leak check;
# without it a leak allocated by the module would show "???" frames instead of ours.
cat >"$work/nginx" <<EOF
#!/bin/sh
# Written by scripts/memcheck.sh: nginx under valgrind memcheck.
if [ \$# = 1 ] && { [ "\$1" = -v ] || [ "\$1" = -V ]; }; then exec '$nginx' "\$1"; fi
exec valgrind --tool=memcheck --trace-children=yes --child-silent-after-fork=no \\
    --log-file='$work/vg/vg.%p.log' --num-callers=30 --track-origins=yes --keep-debuginfo=yes \\
    --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \\
    --vgdb=no --suppressions='$supp' '$nginx' "\$@"
EOF
chmod +x "$work/nginx"

say "memcheck: ${#files[@]} suites under valgrind (prove -j${MEMCHECK_JOBS:-2}), logs in $work/vg"
start=$SECONDS
prove_rc=0
TEST_NGINX_BINARY=$work/nginx TEST_NGINX_LB_MODULE=$module \
    TEST_NGINX_START_TIMEOUT=${TEST_NGINX_START_TIMEOUT:-30} \
    TEST_NGINX_TIMEOUT=${TEST_NGINX_TIMEOUT:-20} \
    TEST_NGINX_TIMEOUT_FACTOR=${TEST_NGINX_TIMEOUT_FACTOR:-3} \
    prove -j"${MEMCHECK_JOBS:-2}" --timer "${files[@]}" 2>&1 | tee "$work/prove.log" \
    || prove_rc=$?
# Test::LB::Server's nginx daemonizes: wait until no process still writes a log (the leak check
# at exit takes a moment), at most 60 s.
for _ in $(seq 120); do
    pgrep -f "valgrind.*--log-file=$work/vg/" >/dev/null || break
    sleep 0.5
done
say "memcheck: suites done in $((SECONDS - start)) s (prove exit $prove_rc); reading the logs"
if [ "$prove_rc" != 0 ]; then
    # prove's summary names each failing suite: "t/NAME.t (Wstat: ...".
    failed=$(sed -n 's/^\([^ ]*\.t\) *(Wstat.*/\1/p' "$work/prove.log" | tr '\n' ' ')
    say "memcheck: failing tests at valgrind's speed in: ${failed:-"? (prove exit $prove_rc)"}"
    say "  (not counted: their code ran and was checked all the same; see $work/prove.log)"
fi
check_logs "$work/vg" | tee "$work/report.txt"
