#!/usr/bin/env bash
# Side-by-side benchmark on loopback: direct to the origin, nginx (TLS proxy, no policy), HAProxy
# (TLS proxy with the closest policy it can express) and vendorgate (full policy), interleaved,
# with wrk (keep-alive HTTP/1.1 over TLS). Prints medians over rounds and the ratios.
#
#   bench/run.sh                 # 3 rounds of 10 s per case (about 10 minutes)
#   ROUNDS=1 DURATION=3 bench/run.sh   # a quick look
#
# Everything shares this machine's cores: read the ratios, not the absolute numbers.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-"32 128"}
BODIES=${BODIES:-"2k 1m"}
THREADS=${THREADS:-2}

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
for p in wrk nginx haproxy; do need "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] && SUDO="" || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk nginx haproxy >/dev/null
fi
PATH=$PATH:/usr/sbin

echo "building (release)…" >&2
(cd "$ROOT" && cargo build -q --release -p vendorgate --bin vendorgate -p vendorgate-mock --bin bench-idp)
VG=$ROOT/target/release/vendorgate

WORK=$(mktemp -d /tmp/vg-bench.XXXXXX)
CONF=$WORK/conf
mkdir -p "$WORK"/{run,logs,tmp,www,tls,keys,conf}
chmod 755 "$WORK" "$WORK"/www "$WORK"/logs "$WORK"/tmp "$WORK"/run
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

python3 - "$WORK/www" <<'PY'
import json, sys
def doc(size):
    head, tail = '{"tickets":"', '"}'
    return head + "x" * (size - len(head) - len(tail)) + tail
open(sys.argv[1] + "/data-2k.json", "w").write(doc(2048))
open(sys.argv[1] + "/data-1m.json", "w").write(doc(1024 * 1024))
PY
"$VG" certs dev --out "$WORK/tls" >/dev/null
cp "$WORK/tls/server.pem" "$WORK/tls/server.crt"; cp "$WORK/tls/server-key.pem" "$WORK/tls/server.key"
cat "$WORK/tls/server.pem" "$WORK/tls/server-key.pem" > "$WORK/tls/haproxy.pem"
"$ROOT/target/release/bench-idp" "$WORK/keys" 10000
TOKEN=$(cat "$WORK/keys/token.txt")
chown -R www-data "$WORK/www" "$WORK/tmp" "$WORK/logs" 2>/dev/null || true

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(port); NGINX_PORT=$(port); HAPROXY_PORT=$(port); VG_PORT=$(port); VG_OFF_PORT=$(port)
ALLOWLIST=$(grep -v '^#' "$ROOT/bench/peers/allowlist.txt" | grep . | sed 's/.*/"&"/' | paste -sd, -)
render() { sed -e "s|@WORK@|$WORK|g" -e "s|@CONF@|$CONF|g" -e "s|@UP_PORT@|$UP_PORT|g" \
  -e "s|@NGINX_PORT@|$NGINX_PORT|g" -e "s|@HAPROXY_PORT@|$HAPROXY_PORT|g" -e "s|@JWT_ALG@|ES256|g" \
  -e "s|@RATE_LIMIT@|100000000|g" -e "s|@ALLOWLIST@|$ALLOWLIST|g" "$@"; }
cp "$ROOT/bench/peers/allowlist.txt" "$CONF/allowlist.txt"
render "$ROOT/bench/peers/upstream-nginx.conf" > "$CONF/upstream.conf"
render "$ROOT/bench/peers/proxy-nginx.conf" > "$CONF/proxy-nginx.conf"
render "$ROOT/bench/peers/haproxy.cfg" | sed "s|tls/server.pem|tls/haproxy.pem|" > "$CONF/haproxy.cfg"
render "$ROOT/bench/vendorgate.toml.in" | sed -e "s|@VG_PORT@|$VG_PORT|" -e "s|@TRAIL@|file|" > "$CONF/vendorgate.toml"
render "$ROOT/bench/vendorgate.toml.in" | sed -e "s|@VG_PORT@|$VG_OFF_PORT|" -e "s|@TRAIL@|off|" > "$CONF/vendorgate-trail-off.toml"

nginx -c "$CONF/upstream.conf" -e "$WORK/logs/upstream_error.log" & pids+=($!)
nginx -c "$CONF/proxy-nginx.conf" -e "$WORK/logs/nginx_proxy_error.log" & pids+=($!); NGINX_PID=$!
haproxy -f "$CONF/haproxy.cfg" >> "$WORK/logs/haproxy.log" 2>&1 & pids+=($!); HAPROXY_PID=$!
"$VG" run --config "$CONF/vendorgate.toml" > "$WORK/logs/vg.out" 2> "$WORK/logs/vg.err" & pids+=($!); VG_PID=$!
"$VG" run --config "$CONF/vendorgate-trail-off.toml" > "$WORK/logs/vg-off.out" 2> "$WORK/logs/vg-off.err" & pids+=($!); VG_OFF_PID=$!
for p in $UP_PORT $NGINX_PORT $HAPROXY_PORT $VG_PORT $VG_OFF_PORT; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done

# Functional check: every case serves the body; the policies refuse what they must.
CURL="curl -sk -o /dev/null -w %{http_code}"
check() { local got; got=$($CURL "${@:2}"); [ "$got" = "$1" ] || { echo "check failed: expected $1, got $got for ${*:2}" >&2; exit 1; }; }
check 200 "http://127.0.0.1:$UP_PORT/data-2k.json"
check 200 "https://127.0.0.1:$NGINX_PORT/data-2k.json"
check 200 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$HAPROXY_PORT/data-2k.json"
check 401 "https://127.0.0.1:$HAPROXY_PORT/data-2k.json"
check 200 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$VG_PORT/data-2k.json"
check 401 "https://127.0.0.1:$VG_PORT/data-2k.json"
check 403 --interface 127.0.0.2 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$VG_PORT/data-2k.json"

ticks() { # utime+stime of a process and its children, in clock ticks
  local total=0 p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    [ -r /proc/$p/stat ] && total=$((total + $(awk '{print $14 + $15}' /proc/$p/stat)))
  done
  echo $total
}
peak_rss_kib() {
  local total=0 p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    [ -r /proc/$p/status ] && total=$((total + $(awk '/VmHWM/{print $2}' /proc/$p/status)))
  done
  echo $total
}
HZ=$(getconf CLK_TCK)
RESULTS=$WORK/results.tsv
printf 'round\tcase\tbody\tconns\trps\tp50_us\tp99_us\tp999_us\tcpu_us_per_req\terrors\n' > "$RESULTS"

run_case() { # round case body conns url pid [wrk args…]
  local round=$1 name=$2 body=$3 conns=$4 url=$5 pid=$6; shift 6
  local before after out line
  before=$( [ "$pid" = "-" ] && echo 0 || ticks "$pid" )
  out=$(wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" -s "$ROOT/bench/wrk/stats.lua" "$url" "$@" 2>&1) || true
  after=$( [ "$pid" = "-" ] && echo 0 || ticks "$pid" )
  line=$(grep VGSTATS <<<"$out") || { echo "wrk failed for $name: $out" >&2; return; }
  python3 - "$line" "$round" "$name" "$body" "$conns" "$before" "$after" "$HZ" "$pid" >> "$RESULTS" <<'PY'
import sys
kv = dict(p.split("=") for p in sys.argv[1].split()[1:])
rnd, name, body, conns, before, after, hz, pid = sys.argv[2:]
req = int(kv["requests"]); secs = int(kv["duration_us"]) / 1e6
cpu = "-" if pid == "-" else "%.1f" % ((int(after) - int(before)) / int(hz) * 1e6 / max(req, 1))
print("\t".join([rnd, name, body, conns, "%.0f" % (req / secs), kv["p50"], kv["p99"], kv["p999"], cpu, str(int(kv["errors"]) + int(kv["non2xx"]))]))
PY
}

AUTH=(-H "Authorization: Bearer $TOKEN")
echo "measuring: $ROUNDS rounds × conns {$CONNS} × bodies {$BODIES}, ${DURATION}s each…" >&2
for round in $(seq "$ROUNDS"); do
  for conns in $CONNS; do
    for body in $BODIES; do
      run_case "$round" direct "$body" "$conns" "http://127.0.0.1:$UP_PORT/data-$body.json" -
      run_case "$round" nginx "$body" "$conns" "https://127.0.0.1:$NGINX_PORT/data-$body.json" "$NGINX_PID"
      run_case "$round" haproxy "$body" "$conns" "https://127.0.0.1:$HAPROXY_PORT/data-$body.json" "$HAPROXY_PID" "${AUTH[@]}"
      if [ -n "${PROFILE_OUT:-}" ] && [ "$round" = 1 ] && [ "$body" = 2k ]; then
        # Optional: sample vendorgate's stacks during its run (perf from Debian's linux-perf).
        perf record -q -e cpu-clock -F 1999 -g -p "$VG_PID" -o "$PROFILE_OUT" -- sleep "$DURATION" 2>/dev/null &
        PERF_PID=$!
      fi
      run_case "$round" vendorgate "$body" "$conns" "https://127.0.0.1:$VG_PORT/data-$body.json" "$VG_PID" "${AUTH[@]}"
      if [ -n "${PERF_PID:-}" ]; then wait "$PERF_PID" || true; PERF_PID=; fi
    done
  done
  # The cold path (10,000 distinct tokens cycling) and the trail's cost, 2 KiB, 32 connections.
  run_case "$round" haproxy-cold 2k 32 "https://127.0.0.1:$HAPROXY_PORT/data-2k.json" "$HAPROXY_PID" -- "$WORK/keys/tokens.txt"
  run_case "$round" vendorgate-cold 2k 32 "https://127.0.0.1:$VG_PORT/data-2k.json" "$VG_PID" -- "$WORK/keys/tokens.txt"
  run_case "$round" vendorgate-trail-off 2k 32 "https://127.0.0.1:$VG_OFF_PORT/data-2k.json" "$VG_OFF_PID" "${AUTH[@]}"
done

echo "peak RSS: nginx $(peak_rss_kib "$NGINX_PID") KiB, haproxy $(peak_rss_kib "$HAPROXY_PID") KiB, vendorgate $(peak_rss_kib "$VG_PID") KiB" > "$WORK/rss.txt"
python3 "$ROOT/bench/summarize.py" "$RESULTS" "$WORK/rss.txt"
echo "raw results: $RESULTS" >&2
