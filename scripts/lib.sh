# shellcheck shell=bash disable=SC2034
# Shared helpers for scripts/bench-replay and scripts/bench-record.
# Sourced, not run. Needs bash 4+, python3, curl; installs wrk (and nginx when
# BENCH_NGINX=1, the default) from the distribution's packages when missing.
#
# Every process a script starts goes through `bg_start`, which remembers its
# pid; `bench_cleanup` (installed as an EXIT trap by `bench_init`) ends exactly
# those pids, so an interrupted run leaves nothing listening.

# ---------------------------------------------------------------- output

log() { printf '%s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
section() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------- setup

BENCH_PIDS=()
BENCH_TMP=""

# bench_init: repo root, temp dir, cleanup trap.
bench_init() {
    REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    BENCH_TMP="$(mktemp -d "${TMPDIR:-/tmp}/ouli-bench.XXXXXX")"
    # nginx workers run as an unprivileged user when started as root: they
    # must be able to read the bodies under the temp dir.
    chmod 755 "$BENCH_TMP"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    # 1,000 idle connections plus the load generator's sockets: raise the
    # soft limit to the hard one when it is low.
    local soft
    soft=$(ulimit -Sn)
    if [[ $soft != unlimited ]] && ((soft < 4096)); then
        ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || log "warning: open files limited to $soft"
    fi
}

bench_cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${BENCH_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "$BENCH_TMP" && -d "$BENCH_TMP" && "${BENCH_KEEP_TMP:-0}" != 1 ]]; then
        rm -rf "$BENCH_TMP"
    fi
}

# as_root CMD...: runs CMD as root (directly when already root, else sudo).
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        return 1
    fi
}

# need_package COMMAND PACKAGE: installs PACKAGE (apt-get) when COMMAND is missing.
need_package() {
    local cmd=$1 package=$2
    command -v "$cmd" >/dev/null && return 0
    [[ -x "/usr/sbin/$cmd" ]] && return 0
    log "$cmd not found: installing the $package package"
    if command -v apt-get >/dev/null; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >&2 ||
            { as_root apt-get update -q >&2 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >&2; } ||
            return 1
    elif command -v dnf >/dev/null; then
        as_root dnf install -y "$package" >&2 || return 1
    else
        return 1
    fi
}

need_tools() {
    need_package python3 python3 || die "python3 is required"
    need_package curl curl || die "curl is required"
    need_package strip binutils || die "strip (binutils) is required"
    need_package wrk wrk || die "wrk is required (https://github.com/wg/wrk) and could not be installed"
    NGINX_BIN=""
    if [[ "${BENCH_NGINX:-1}" == 1 ]]; then
        if need_package nginx nginx; then
            NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
        else
            log "nginx could not be installed: its column is left out"
        fi
    fi
}

# build_release: the ouli binary and the bench examples, release profile.
build_release() {
    log "building release (cargo build --release --locked) ..."
    # A profiled run needs the `profiling` feature (--profile); the figures of
    # an unprofiled run are of the binary users get, without it.
    local features=()
    if [ -n "${BENCH_PROFILE_DIR:-}" ]; then
        features=(--features profiling)
    fi
    (cd "$REPO_ROOT" && cargo build --release --locked "${features[@]}" --bin ouli \
        --example ceiling --example upstream --example gen-recording >&2)
    # cargo's own target dir setting is honoured (a second one keeps a
    # release build beside a debug build in progress).
    local target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
    OULI_BIN="$target/release/ouli"
    CEILING_BIN="$target/release/examples/ceiling"
    UPSTREAM_BIN="$target/release/examples/upstream"
    GEN_RECORDING_BIN="$target/release/examples/gen-recording"
}

# ---------------------------------------------------------------- processes

# free_port: an unused TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# bg_start LOGFILE CMD...: starts CMD in the background, output to LOGFILE;
# sets BG_PID.
bg_start() {
    local logfile=$1
    shift
    # Emptied here, before the fork: a redirection in the background command
    # truncates only once the child runs, and a caller polling LOGFILE for a
    # ready line would meanwhile find the previous run's (a wrk run against
    # a port nobody listened on yet: "connection refused").
    : >"$logfile"
    "$@" >>"$logfile" 2>&1 &
    BG_PID=$!
    BENCH_PIDS+=("$BG_PID")
}

# bg_stop PID: ends one process started by bg_start and waits for it.
bg_stop() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# wait_http URL [SECONDS]: until URL answers anything over HTTP.
wait_http() {
    local url=$1 limit=${2:-20} i
    for ((i = 0; i < limit * 20; i++)); do
        if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.05
    done
    die "$url did not answer within ${limit}s"
}

# rss_kib PID: resident set size in KiB (0 when the process is gone).
rss_kib() {
    awk '/^VmRSS:/ {print $2; found=1} END {if (!found) print 0}' "/proc/$1/status" 2>/dev/null || echo 0
}

# tree_rss_kib PID: RSS of PID plus its direct children (nginx master + workers).
tree_rss_kib() {
    local total child
    total=$(rss_kib "$1")
    for child in $(pgrep -P "$1" || true); do
        total=$((total + $(rss_kib "$child")))
    done
    echo "$total"
}

# ---------------------------------------------------------------- nginx

# nginx_start NAME SERVER_BLOCK_BODY [HTTP_BLOCK_EXTRA]: an nginx on a free
# port, 1 worker per CPU; sets NGINX_PID and NGINX_PORT.
nginx_start() {
    local body=$2 http_extra=${3:-} dir="$BENCH_TMP/nginx-$1"
    mkdir -p "$dir/logs" "$dir/tmp"
    chmod -R 755 "$dir"
    NGINX_PORT=$(free_port)
    cat >"$dir/nginx.conf" <<EOF
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    $http_extra
    server {
        listen 127.0.0.1:$NGINX_PORT;
        $body
    }
}
EOF
    bg_start "$dir/logs/stdout.log" "$NGINX_BIN" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
    NGINX_PID=$BG_PID
    local i
    for ((i = 0; i < 200; i++)); do
        if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$NGINX_PORT/__ready_probe"; then return 0; fi
        kill -0 "$NGINX_PID" 2>/dev/null || die "nginx did not start: $(cat "$dir/logs/error.log" "$dir/logs/stdout.log" 2>/dev/null)"
        sleep 0.05
    done
    die "nginx did not answer within 10s: $(cat "$dir/logs/error.log" 2>/dev/null)"
}

# ---------------------------------------------------------------- load

# The Lua `done` hook every wrk run gets: one machine-readable line.
# Latencies in microseconds; `non2xx` counts answers that were not 2xx/3xx
# (a replay miss would show up there, never as speed).
WRK_DONE_LUA='
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT rps=%.1f p50=%d p99=%d p999=%d non2xx=%d sockerr=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.status, e.connect + e.read + e.write + e.timeout))
end
'

# wrk_lua NAME LUA_BODY: writes a wrk script (body + the done hook); prints its path.
wrk_lua() {
    local path="$BENCH_TMP/$1.lua"
    printf '%s\n%s\n' "$2" "$WRK_DONE_LUA" >"$path"
    echo "$path"
}

# wrk_run URL CONNECTIONS SECONDS LUA_FILE: one wrk run; prints
# "rps p50 p99 p999" (µs). Fails when any answer was not 2xx/3xx.
wrk_run() {
    local url=$1 conns=$2 secs=$3 lua=$4 threads out line
    threads=$((conns < 2 ? 1 : 2))
    if [[ -n "${WRK_THREADS_OVERRIDE:-}" ]]; then threads=$WRK_THREADS_OVERRIDE; fi
    out=$(wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 10s -s "$lua" "$url" 2>&1) ||
        die "wrk failed against $url: $out"
    line=$(grep '^WRKRESULT' <<<"$out") || die "wrk printed no result against $url: $out"
    local non2xx sockerr
    non2xx=$(sed -E 's/.*non2xx=([0-9]+).*/\1/' <<<"$line")
    sockerr=$(sed -E 's/.*sockerr=([0-9]+).*/\1/' <<<"$line")
    if ((non2xx > 0)); then
        die "$url answered $non2xx non-2xx responses (a replay miss?): $(curl -s "$url" | head -c 600)"
    fi
    if ((sockerr > 0)); then log "warning: $url: $sockerr socket errors in $line"; fi
    sed -E 's/.*rps=([0-9.]+) p50=([0-9]+) p99=([0-9]+) p999=([0-9]+).*/\1 \2 \3 \4/' <<<"$line"
}

# ---------------------------------------------------------------- numbers

# median V...: the median (mean of the two middle values for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {if (NR==0) {print "nan"; exit}
        if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'
}

# median_field FIELD TEXT: median of the FIELD-th column of TEXT's non-empty lines.
median_field() {
    local values
    mapfile -t values < <(awk -v f="$1" 'NF {print $f}' <<<"$2")
    ((${#values[@]})) || { echo -; return; }
    median "${values[@]}"
}

# ratio A B: A/B with 2 decimals ("-" when B is 0 or missing).
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {if (b+0 == 0 || a == "-" || b == "-") print "-"; else printf "%.2f", a/b}'
}

# fmt_int V: a number rounded, with no decimals.
fmt_int() { awk -v v="$1" 'BEGIN {if (v == "-" || v == "") print "-"; else printf "%.0f", v}'; }

# row LABEL VALUES...: one aligned table row.
row() {
    local label=$1
    shift
    printf '%-26s' "$label"
    printf '%14s' "$@"
    printf '\n'
}

# ---------------------------------------------------------------- ouli

# ouli_config FILE UPSTREAM_PORT LISTEN_PORT [EXTRA_YAML]: a one-endpoint
# config in test-server's YAML keys plus ouli's own.
ouli_config() {
    local file=$1 upstream_port=$2 listen_port=$3 extra=${4:-}
    cat >"$file" <<EOF
endpoints:
  - target_host: 127.0.0.1
    target_type: http
    target_port: $upstream_port
    source_type: http
    source_port: $listen_port
    health: /health
$extra
EOF
}

# ouli_start LOGFILE ARGS...: starts ouli with ARGS, waits for its
# "ouli listening" line; sets OULI_PID.
ouli_start() {
    local logfile=$1 i
    shift
    bg_start "$logfile" "$OULI_BIN" "$@"
    OULI_PID=$BG_PID
    for ((i = 0; i < 400; i++)); do
        if grep -q 'ouli listening' "$logfile" 2>/dev/null; then return 0; fi
        if ! kill -0 "$OULI_PID" 2>/dev/null; then die "ouli exited at start: $(cat "$logfile")"; fi
        sleep 0.05
    done
    die "ouli did not print its ready line within 20s: $(cat "$logfile")"
}

# example_start LOGFILE BIN ARGS...: starts a bench example that prints
# "<name> listening addr=IP:PORT"; sets EX_PID and EX_PORT.
example_start() {
    local logfile=$1 i
    shift
    bg_start "$logfile" "$@"
    EX_PID=$BG_PID
    for ((i = 0; i < 200; i++)); do
        if grep -q 'listening addr=' "$logfile" 2>/dev/null; then
            EX_PORT=$(sed -nE 's/.*listening addr=[0-9.]+:([0-9]+).*/\1/p' "$logfile" | head -1)
            return 0
        fi
        sleep 0.05
    done
    die "$1 did not start: $(cat "$logfile")"
}
