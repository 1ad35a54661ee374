#!/usr/bin/env bash
# Side-by-side benchmark on loopback: direct to the origin, nginx (TLS proxy, no policy), HAProxy
# (TLS proxy with the closest policy it can express) and vendorgate (full policy), interleaved,
# with wrk (keep-alive HTTP/1.1 over TLS). Prints medians over rounds, the ratios, and each of the
# performance issue's targets marked met or OPEN against this run.
#
#   bench/run.sh                 # 3 rounds of 10 s per case (about 20 minutes)
#   ROUNDS=1 DURATION=3 bench/run.sh   # a quick look
#   SCALE=0 EXTRAS=0 bench/run.sh      # only the side-by-side matrix
#   PROFILE_OUT=/tmp/vg.perf PROFILE_CASE=vendorgate-cold bench/run.sh   # perf profile of one case
#   VG=/path/to/vendorgate bench/run.sh   # measure that build instead of this tree's
#   AB=/path/to/other/vendorgate ROUNDS=8 [AB_BODY=1m] [AB_EXTRA=toml] [BASE_EXTRA=toml] [BODY_SHAPE=list] bench/run.sh   # only an A/B: this tree's build against
#                  another, loaded at the same moment (see "the same moment" below)
#
# Besides the matrix (direct, nginx, HAProxy, vendorgate × 2 KiB/1 MiB × 32/128 connections):
#   cold path      every request carries a token never seen before (a fresh slice of tokens per
#                  round, for HAProxy and for a vendorgate instance of its own)
#   trail cost     the same policy with the decision trail off
#   same moment    nginx and vendorgate (trail on, then off) loaded at once, 16 connections each:
#                  CPU per request compared within each run, free of the machine's drift
#   scale (SCALE)  10 vs 100,000 active accounts (tokens cycling, all verified once beforehand),
#                  and 10,000 CIDRs + 1,000 routes vs the small policy
#   extras (EXTRAS) p99 at half of vendorgate's saturating load vs direct and nginx at the same
#                  rate; RSS during a 1 GiB download; RSS at IDLE_CONNS idle keep-alive connections
#
# Everything shares this machine's cores: read the ratios, not the absolute numbers.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-"32 128"}
BODIES=${BODIES:-"2k 1m"}
THREADS=${THREADS:-2}
SCALE=${SCALE:-1}
EXTRAS=${EXTRAS:-1}
IDLE_CONNS=${IDLE_CONNS:-10000}
AB=${AB:-}
ACCOUNTS=100000
COLD_SLICE=${COLD_SLICE:-$((DURATION * 16000))}   # tokens per cold round: more than one run sends (the cold path has reached 12,000 req/s)

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
VG=${VG:-$ROOT/target/release/vendorgate}   # VG=/path/to/vendorgate: measure that build

WORK=$(mktemp -d /tmp/vg-bench.XXXXXX)
CONF=$WORK/conf
mkdir -p "$WORK"/{run,logs,tmp,www,tls,keys,conf}
chmod 755 "$WORK" "$WORK"/www "$WORK"/logs "$WORK"/tmp "$WORK"/run
pids=()
# A full run writes several GiB of decision logs and 400,000 tokens: gone at the end (KEEP=1 keeps
# them), leaving the results and notes. Runs that kept everything filled /tmp after a few rounds.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"/logs "$WORK"/keys "$WORK"/tmp "$WORK"/www
}
trap cleanup EXIT

# BODY_SHAPE=list: the bodies are Zendesk-like ticket lists (records with keys, nested requesters,
# tags) instead of one long string: what redaction (AB_EXTRA='[[vendors.redact]]…') is measured on.
BODY_SHAPE=${BODY_SHAPE:-string} python3 - "$WORK/www" <<'PY'
import json, os, sys
def doc(size):
    if os.environ["BODY_SHAPE"] == "list":
        records, i = [], 0
        while True:
            i += 1
            r = {"id": i, "subject": "Where is my order?", "status": "open", "priority": "normal",
                 "description": "Hello, I placed order #%d and need help with the delivery." % (100000 + i),
                 "requester": {"id": 10000 + i, "name": "Ana Martin", "email": "ana%d@example.com" % i,
                               "phone": "+33 6 12 34 56 78"},
                 "group_id": 360004, "tags": ["marketplace", "delivery"], "via": {"channel": "email"}}
            if len(json.dumps({"tickets": records + [r], "pad": ""})) > size:
                break
            records.append(r)
        text = json.dumps({"tickets": records, "pad": ""})
        return text[:-2] + "x" * (size - len(text)) + '"}'
    head, tail = '{"tickets":"', '"}'
    return head + "x" * (size - len(head) - len(tail)) + tail
open(sys.argv[1] + "/data-2k.json", "w").write(doc(2048))
open(sys.argv[1] + "/data-1m.json", "w").write(doc(1024 * 1024))
PY
"$VG" certs dev --out "$WORK/tls" >/dev/null
cp "$WORK/tls/server.pem" "$WORK/tls/server.crt"; cp "$WORK/tls/server-key.pem" "$WORK/tls/server.key"
cat "$WORK/tls/server.pem" "$WORK/tls/server-key.pem" > "$WORK/tls/haproxy.pem"
MINT=$((ACCOUNTS + ROUNDS * COLD_SLICE)); [ -n "$AB" ] && MINT=10   # an A/B cycles no tokens
echo "minting $MINT tokens…" >&2
"$ROOT/target/release/bench-idp" "$WORK/keys" "$MINT"
TOKEN=$(cat "$WORK/keys/token.txt")
TOKENS=$WORK/keys/tokens.txt   # lines 1…ACCOUNTS: the accounts case; then one cold slice per round
chown -R www-data "$WORK/www" "$WORK/tmp" "$WORK/logs" 2>/dev/null || true

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(port); NGINX_PORT=$(port); HAPROXY_PORT=$(port)
VG_PORT=$(port); VG_OFF_PORT=$(port); VG_COLD_PORT=$(port); VG_ACCT_PORT=$(port); VG_LARGE_PORT=$(port)
VG_REF_PORT=$(port); VG_AB_PORT=$(port)
ALLOWLIST=$(grep -v '^#' "$ROOT/bench/peers/allowlist.txt" | grep . | sed 's/.*/"&"/' | paste -sd, -)
render() { sed -e "s|@WORK@|$WORK|g" -e "s|@CONF@|$CONF|g" -e "s|@UP_PORT@|$UP_PORT|g" \
  -e "s|@NGINX_PORT@|$NGINX_PORT|g" -e "s|@HAPROXY_PORT@|$HAPROXY_PORT|g" -e "s|@JWT_ALG@|ES256|g" \
  -e "s|@RATE_LIMIT@|100000000|g" -e "s|@ALLOWLIST@|$ALLOWLIST|g" "$@"; }
cp "$ROOT/bench/peers/allowlist.txt" "$CONF/allowlist.txt"
render "$ROOT/bench/peers/upstream-nginx.conf" > "$CONF/upstream.conf"
render "$ROOT/bench/peers/proxy-nginx.conf" > "$CONF/proxy-nginx.conf"
render "$ROOT/bench/peers/haproxy.cfg" | sed "s|tls/server.pem|tls/haproxy.pem|" > "$CONF/haproxy.cfg"
vg_conf() { # name port trail
  render "$ROOT/bench/vendorgate.toml.in" | sed -e "s|@VG_PORT@|$2|" -e "s|@TRAIL@|$3|" \
    -e "s|decisions.jsonl|decisions-$1.jsonl|" > "$CONF/vendorgate-$1.toml"
}
vg_conf main "$VG_PORT" file; vg_conf trail-off "$VG_OFF_PORT" off; vg_conf cold "$VG_COLD_PORT" file
vg_conf accounts "$VG_ACCT_PORT" file; vg_conf large "$VG_LARGE_PORT" file
# The paired cases' reference: the main policy in an instance of its own, which serves nothing else,
# like the variants it is compared with (the main instance also serves the matrix, 1 MiB bodies and
# gigabytes of decision log included, and ran 10% slower than the others beside them).
vg_conf reference "$VG_REF_PORT" file
# AB: the other build runs the reference's policy, on a port of its own.
[ -n "$AB" ] && vg_conf candidate "$VG_AB_PORT" file
# AB_EXTRA: TOML appended to the candidate's policy (AB=this build AB_EXTRA='[detect]…' measures a
# feature's cost against the same build without it).
[ -n "$AB" ] && [ -n "${AB_EXTRA:-}" ] && printf '%b\n' "$AB_EXTRA" >> "$CONF/vendorgate-candidate.toml"
# BASE_EXTRA: the same for the base (this tree's build), so both sides of an A/B can carry a
# feature (BASE_EXTRA=AB_EXTRA='[otel]…': the OpenTelemetry export of two builds compared).
[ -n "$AB" ] && [ -n "${BASE_EXTRA:-}" ] && printf '%b\n' "$BASE_EXTRA" >> "$CONF/vendorgate-reference.toml"
# The large policy: 10,000 more networks in the vendor's allow-list (scattered /28s that cannot
# merge into a few ranges) and 999 more routes around the one the benchmark hits.
python3 - "$CONF/vendorgate-large.toml" <<'PY'
import random, sys
path = sys.argv[1]
text = open(path).read()
rnd, nets = random.Random(7), set()
while len(nets) < 10000:
    a = rnd.randrange(11 << 24, 100 << 24) & ~0xF
    nets.add(f'"{a >> 24}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}/28"')
text = text.replace("ip_allow = [", "ip_allow = [" + ", ".join(sorted(nets)) + ", ", 1)
routes = "".join(
    f'\n[[routes]]\nid = "r{i}"\nmethods = ["GET"]\npath = "/api/v2/resource-{i}/{{id}}/items/**"\nclass = "export"\n'
    for i in range(999))
text = text.replace("[[limits.rate]]", routes + "\n[[limits.rate]]", 1)
open(path, "w").write(text)
PY

nginx -c "$CONF/upstream.conf" -e "$WORK/logs/upstream_error.log" & pids+=($!)
nginx -c "$CONF/proxy-nginx.conf" -e "$WORK/logs/nginx_proxy_error.log" & pids+=($!); NGINX_PID=$!
haproxy -f "$CONF/haproxy.cfg" >> "$WORK/logs/haproxy.log" 2>&1 & pids+=($!); HAPROXY_PID=$!
vg_start() { exec "$VG" run --config "$CONF/vendorgate-$1.toml" > "$WORK/logs/vg-$1.out" 2> "$WORK/logs/vg-$1.err"; }
vg_start main & pids+=($!); VG_PID=$!
vg_start trail-off & pids+=($!); VG_OFF_PID=$!
vg_start cold & pids+=($!); VG_COLD_PID=$!
vg_start accounts & pids+=($!); VG_ACCT_PID=$!
vg_start large & pids+=($!); VG_LARGE_PID=$!
vg_start reference & pids+=($!); VG_REF_PID=$!
if [ -n "$AB" ]; then VG=$AB vg_start candidate & pids+=($!); VG_AB_PID=$!; fi
for p in $UP_PORT $NGINX_PORT $HAPROXY_PORT $VG_PORT $VG_OFF_PORT $VG_COLD_PORT $VG_ACCT_PORT $VG_LARGE_PORT $VG_REF_PORT \
         $([ -n "$AB" ] && echo "$VG_AB_PORT"); do
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
check 200 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$VG_LARGE_PORT/data-2k.json"
check 403 --interface 127.0.0.2 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$VG_LARGE_PORT/data-2k.json"
check 200 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$VG_REF_PORT/data-2k.json"
[ -n "$AB" ] && check 200 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$VG_AB_PORT/data-2k.json"
ACCT_ADMIN=$(grep -o 'admin=[0-9.:]*' "$WORK/logs/vg-accounts.out" | cut -d= -f2)
metric() { curl -s "http://$ACCT_ADMIN/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

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
printf 'round\tcase\tbody\tconns\trps\tp50_us\tp99_us\tp999_us\tcpu_us_per_req\terrors\treused\n' > "$RESULTS"

run_case() { # round case body conns url pid [wrk args…]
  local round=$1 name=$2 body=$3 conns=$4 url=$5 pid=$6; shift 6
  local before after out line perf_pid=
  if [ -n "${PROFILE_OUT:-}" ] && [ "$round" = 1 ] && [ "$name" = "${PROFILE_CASE:-vendorgate}" ] \
     && [ "$body" = 2k ] && [ "$pid" != "-" ]; then
    # Optional: sample this case's stacks during its first run (perf from Debian's linux-perf).
    perf record -q -e cpu-clock -F 1999 -g -p "$pid" -o "$PROFILE_OUT" -- sleep "$DURATION" 2>/dev/null &
    perf_pid=$!
  fi
  before=$( [ "$pid" = "-" ] && echo 0 || ticks "$pid" )
  out=$(wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" -s "$ROOT/bench/wrk/stats.lua" "$url" "$@" 2>&1) || true
  after=$( [ "$pid" = "-" ] && echo 0 || ticks "$pid" )
  if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; fi
  line=$(grep VGSTATS <<<"$out") || { echo "wrk failed for $name: $out" >&2; return; }
  python3 - "$line" "$round" "$name" "$body" "$conns" "$before" "$after" "$HZ" "$pid" >> "$RESULTS" <<'PY'
import sys
kv = dict(p.split("=") for p in sys.argv[1].split()[1:])
rnd, name, body, conns, before, after, hz, pid = sys.argv[2:]
req = int(kv["requests"]); secs = int(kv["duration_us"]) / 1e6
cpu = "-" if pid == "-" else "%.1f" % ((int(after) - int(before)) / int(hz) * 1e6 / max(req, 1))
print("\t".join([rnd, name, body, conns, "%.0f" % (req / secs), kv["p50"], kv["p99"], kv["p999"], cpu,
                 str(int(kv["errors"]) + int(kv["non2xx"])), kv["reused"]]))
PY
}

# Every case gets the same request, the agent's token included: a proxy without policy still has to
# take in, decrypt and pass on those 500 bytes (until this was so, nginx and direct got a 100-byte
# request: about 4% less CPU for nginx, in eight runs side by side).
AUTH=(-H "Authorization: Bearer $TOKEN")
slice() { echo -- "tokens=$TOKENS" "from=$1" "count=$2" "threads=$THREADS"; }

# The paired cases (see the round loop): each takes the round.
haproxy_cold() { run_case "$1" haproxy-cold 2k 32 "https://127.0.0.1:$HAPROXY_PORT/data-2k.json" "$HAPROXY_PID" $cold; }
vendorgate_cold() { run_case "$1" vendorgate-cold 2k 32 "https://127.0.0.1:$VG_COLD_PORT/data-2k.json" "$VG_COLD_PID" $cold; }
reference() { run_case "$1" vendorgate-reference 2k 32 "https://127.0.0.1:$VG_REF_PORT/data-2k.json" "$VG_REF_PID" "${AUTH[@]}"; }
trail_off() { run_case "$1" vendorgate-trail-off 2k 32 "https://127.0.0.1:$VG_OFF_PORT/data-2k.json" "$VG_OFF_PID" "${AUTH[@]}"; }
large() { [ "$SCALE" = 1 ] && run_case "$1" vendorgate-large 2k 32 "https://127.0.0.1:$VG_LARGE_PORT/data-2k.json" "$VG_LARGE_PID" "${AUTH[@]}"; }
ten_accounts() { run_case "$1" vendorgate-10-accounts 2k 32 "https://127.0.0.1:$VG_ACCT_PORT/data-2k.json" "$VG_ACCT_PID" $(slice 0 10); }
all_accounts() {
  local misses; misses=$(metric vendorgate_token_cache_misses_total)
  run_case "$1" vendorgate-100k-accounts 2k 32 "https://127.0.0.1:$VG_ACCT_PORT/data-2k.json" "$VG_ACCT_PID" $(slice 0 "$ACCOUNTS")
  echo "round $1: 100k accounts run had $(( $(metric vendorgate_token_cache_misses_total) - misses )) token cache misses" >> "$WORK/accounts.txt"
}
# The same moment: two instances loaded at once (half the connections each, one wrk thread each;
# nginx and vendorgate in every round, or two builds with AB=), so that both meet the same state of
# this machine; their CPU per request is compared run by run. Sequential cases drift ±10% against each other, which hides a difference of
# a few percent; side by side, an A/A run's ratio stays within about 4%.
side_by_side() { # round name-a port-a pid-a name-b port-b pid-b [body]
  local body=${8:-2k}
  THREADS=1 run_case "$1" "$2" "$body" 16 "https://127.0.0.1:$3/data-$body.json" "$4" "${AUTH[@]}" &
  THREADS=1 run_case "$1" "$5" "$body" 16 "https://127.0.0.1:$6/data-$body.json" "$7" "${AUTH[@]}"
  wait $!
}
beside() { # round name-of-vendorgate-case port pid
  side_by_side "$1" "nginx-beside-$2" "$NGINX_PORT" "$NGINX_PID" "$2-beside-nginx" "$3" "$4"
}
beside_full() { beside "$1" vendorgate "$VG_REF_PORT" "$VG_REF_PID"; }
beside_trail_off() { beside "$1" vendorgate-trail-off "$VG_OFF_PORT" "$VG_OFF_PID"; }
# round case… : the cases in the order given in odd rounds, reversed in even ones.
in_order() {
  local round=$1; shift
  local cases=("$@") i
  if [ $((round % 2)) = 0 ]; then
    for ((i = ${#cases[@]} - 1; i >= 0; i--)); do "${cases[$i]}" "$round" || true; done
  else
    for i in "${cases[@]}"; do "$i" "$round" || true; done
  fi
}

if [ -n "$AB" ]; then
  # Only the A/B: one build against another needs the same moment to tell a few percent apart.
  echo "A/B at the same moment: $VG (base) against $AB (candidate), $ROUNDS runs of ${DURATION}s, ${AB_BODY:-2k} bodies…" >&2
  for round in $(seq "$ROUNDS"); do
    side_by_side "$round" base-beside-candidate "$VG_REF_PORT" "$VG_REF_PID" candidate-beside-base "$VG_AB_PORT" "$VG_AB_PID" "${AB_BODY:-2k}"
  done
  : > "$WORK/notes.txt"
  python3 "$ROOT/bench/summarize.py" "$RESULTS" "$WORK/notes.txt"
  echo "raw results: $RESULTS" >&2
  exit 0
fi

if [ "$SCALE" = 1 ]; then
  # Every one of the 100,000 accounts' tokens verified once (and its session, rate and byte
  # counters created) before anything is measured.
  echo "warming 100,000 accounts…" >&2
  for _ in $(seq 12); do
    [ "$(metric vendorgate_token_cache_entries)" -ge "$ACCOUNTS" ] && break
    wrk -t"$THREADS" -c32 -d10s -s "$ROOT/bench/wrk/stats.lua" "https://127.0.0.1:$VG_ACCT_PORT/data-2k.json" $(slice 0 "$ACCOUNTS") >/dev/null
  done
  echo "accounts warmed: $(metric vendorgate_token_cache_entries) tokens cached" >&2
fi

echo "measuring: $ROUNDS rounds × conns {$CONNS} × bodies {$BODIES}, ${DURATION}s each…" >&2
for round in $(seq "$ROUNDS"); do
  for conns in $CONNS; do
    for body in $BODIES; do
      run_case "$round" direct "$body" "$conns" "http://127.0.0.1:$UP_PORT/data-$body.json" - "${AUTH[@]}"
      run_case "$round" nginx "$body" "$conns" "https://127.0.0.1:$NGINX_PORT/data-$body.json" "$NGINX_PID" "${AUTH[@]}"
      run_case "$round" haproxy "$body" "$conns" "https://127.0.0.1:$HAPROXY_PORT/data-$body.json" "$HAPROXY_PID" "${AUTH[@]}"
      run_case "$round" vendorgate "$body" "$conns" "https://127.0.0.1:$VG_PORT/data-$body.json" "$VG_PID" "${AUTH[@]}"
    done
  done
  # The comparisons below are paired: each variant runs right next to what it is compared with,
  # in the opposite order every other round, and the summary takes the median of the per-round
  # ratios. Compared with cases minutes apart, this machine's drift (±10% over a run) lands on
  # both sides instead of one.
  #
  # The cold path, 2 KiB, 32 connections: this round's slice of never-seen tokens. HAProxy has no
  # token cache, so it gets the same slice.
  cold=$(slice $((ACCOUNTS + (round - 1) * COLD_SLICE)) "$COLD_SLICE")
  in_order "$round" haproxy_cold vendorgate_cold
  # The trail and the large policy against the same reference run between them.
  in_order "$round" trail_off reference large
  [ "$SCALE" = 1 ] && in_order "$round" ten_accounts all_accounts
  in_order "$round" beside_full beside_trail_off
done

{
  echo "peak RSS: nginx $(peak_rss_kib "$NGINX_PID") KiB, haproxy $(peak_rss_kib "$HAPROXY_PID") KiB, vendorgate $(peak_rss_kib "$VG_PID") KiB"
  [ "$SCALE" = 1 ] && echo "vendorgate with 100,000 active accounts: RSS $(awk '/VmRSS/{print $2}' /proc/$VG_ACCT_PID/status) KiB" && cat "$WORK/accounts.txt"
} > "$WORK/notes.txt"

if [ "$EXTRAS" = 1 ]; then
  # p99 at half of vendorgate's saturating load (2 KiB, 32 connections), with direct and nginx
  # paced to the same rate: each connection pauses between requests.
  SAT=$(python3 - "$RESULTS" <<'PY'
import csv, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t")
        if (r["case"], r["body"], r["conns"]) == ("vendorgate", "2k", "32")]
print(int(statistics.median(float(r["rps"]) for r in rows)))
PY
)
  PAUSE=$(( (32 * 1000 * 2 + SAT / 2) / SAT ))
  echo "half load: vendorgate saturates at $SAT req/s; pacing 32 connections at ${PAUSE} ms (about $((32 * 1000 / PAUSE)) req/s)…" >&2
  for round in $(seq "$ROUNDS"); do
    run_case "$round" direct-half 2k 32 "http://127.0.0.1:$UP_PORT/data-2k.json" - "${AUTH[@]}" -- "pause=$PAUSE"
    run_case "$round" nginx-half 2k 32 "https://127.0.0.1:$NGINX_PORT/data-2k.json" "$NGINX_PID" "${AUTH[@]}" -- "pause=$PAUSE"
    run_case "$round" vendorgate-half 2k 32 "https://127.0.0.1:$VG_PORT/data-2k.json" "$VG_PID" "${AUTH[@]}" -- "pause=$PAUSE"
  done

  # A 1 GiB download through vendorgate: RSS sampled every 100 ms while it streams.
  truncate -s 1G "$WORK/www/data-1g.bin"
  before=$(awk '/VmRSS/{print $2}' /proc/$VG_PID/status)
  curl -sk -o /dev/null -w '%{size_download} %{speed_download}\n' -H "Authorization: Bearer $TOKEN" \
    "https://127.0.0.1:$VG_PORT/data-1g.bin" > "$WORK/download.txt" &
  CURL_PID=$!
  peak=$before
  while kill -0 "$CURL_PID" 2>/dev/null; do
    now=$(awk '/VmRSS/{print $2}' /proc/$VG_PID/status); [ "$now" -gt "$peak" ] && peak=$now; sleep 0.1
  done
  read -r got speed < "$WORK/download.txt"
  echo "1 GiB download: $got bytes at $((${speed%.*} / 1048576)) MiB/s; vendorgate RSS $before KiB before, peak $peak KiB during (+$((peak - before)) KiB)" >> "$WORK/notes.txt"

  for proto in http/1.1 h2; do
    echo "opening $IDLE_CONNS idle $proto connections…" >&2
    PROTO=$proto "$ROOT/bench/idle.sh" "$IDLE_CONNS" >> "$WORK/notes.txt" 2>&1 || echo "idle $proto measurement failed" >> "$WORK/notes.txt"
  done
fi

python3 "$ROOT/bench/summarize.py" "$RESULTS" "$WORK/notes.txt"
echo "raw results: $RESULTS" >&2
