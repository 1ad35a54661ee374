#!/usr/bin/env bash
# Replicas sharing Redis against the same replicas each on its own memory, at the same moment:
# two vendorgate replicas with `state.backend = "redis"` (one redis-server, or a three-master Redis
# Cluster with CLUSTER=1) and two with state in memory, every replica on its own loopback address
# (127.0.0.2-5), the full policy on (rate limit, egress cap, session, trail). Four wrk processes
# load the four replicas at once (CONNS connections each, the agents' ACCOUNTS tokens spread over
# them), so both modes meet the same state of this shared machine; each round compares them.
#
#   bench/replicas.sh                       # 5 rounds of 10 s
#   ROUNDS=3 DURATION=5 bench/replicas.sh   # a quick look
#   CLUSTER=1 bench/replicas.sh             # Redis Cluster (3 masters) instead of one server
#
# Prints, per mode, requests per second (both replicas together) and CPU per request (the
# replicas'; for Redis mode also with redis-server's), medians over rounds, and the ratios Redis
# over memory that the "Scale out" issue sets at >= 0.85.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-8}
ACCOUNTS=${ACCOUNTS:-32}
CLUSTER=${CLUSTER:-0}

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
for p in wrk nginx redis-server; do need "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] && SUDO="" || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk nginx redis-server >/dev/null
fi
PATH=$PATH:/usr/sbin

echo "building (release)…" >&2
(cd "$ROOT" && cargo build -q --release -p vendorgate --bin vendorgate -p vendorgate-mock --bin bench-idp)
VG=${VG:-$ROOT/target/release/vendorgate}

WORK=$(mktemp -d /tmp/vg-replicas.XXXXXX)
CONF=$WORK/conf
mkdir -p "$WORK"/{run,logs,tmp,www,tls,keys,conf,redis}
chmod 755 "$WORK" "$WORK"/www "$WORK"/logs "$WORK"/tmp "$WORK"/run
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"/logs "$WORK"/keys "$WORK"/tmp "$WORK"/www "$WORK"/redis
}
trap cleanup EXIT

python3 - "$WORK/www/data-2k.json" <<'PY'
import sys
head, tail = '{"tickets":"', '"}'
open(sys.argv[1], "w").write(head + "x" * (2048 - len(head) - len(tail)) + tail)
PY
"$VG" certs dev --out "$WORK/tls" >/dev/null
"$ROOT/target/release/bench-idp" "$WORK/keys" "$ACCOUNTS" >&2
TOKENS=$WORK/keys/tokens.txt
chown -R www-data "$WORK/www" "$WORK/tmp" "$WORK/logs" 2>/dev/null || true

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(port)
ALLOWLIST=$(grep -v '^#' "$ROOT/bench/peers/allowlist.txt" | grep . | sed 's/.*/"&"/' | paste -sd, -)
render() { sed -e "s|@WORK@|$WORK|g" -e "s|@CONF@|$CONF|g" -e "s|@UP_PORT@|$UP_PORT|g" \
  -e "s|@JWT_ALG@|ES256|g" -e "s|@ALLOWLIST@|$ALLOWLIST|g" "$@"; }
render "$ROOT/bench/peers/upstream-nginx.conf" > "$CONF/upstream.conf"
nginx -c "$CONF/upstream.conf" -e "$WORK/logs/upstream_error.log" & pids+=($!)

# Redis: one server, or three masters joined into a cluster.
REDIS_PIDS=()
redis_start() { # port
  redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK/redis" \
    --dbfilename "dump-$1.rdb" "${@:2}" > "$WORK/logs/redis-$1.log" 2>&1 &
  pids+=($!); REDIS_PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis-server on $1 did not start" >&2; exit 1
}
if [ "$CLUSTER" = 1 ]; then
  nodes=()
  for i in 1 2 3; do
    p=$(port); redis_start "$p" --cluster-enabled yes --cluster-port "$(port)" --cluster-config-file "$WORK/redis/nodes-$p.conf"
    nodes+=("127.0.0.1:$p")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  for _ in $(seq 100); do redis-cli -p "${nodes[0]##*:}" cluster info | grep -q 'cluster_state:ok' && break; sleep 0.1; done
  STATE=$(printf '[state]\nbackend = "redis"\nredis_cluster = [%s]\non_state_error = "deny"\n' \
    "$(printf '"redis://%s",' "${nodes[@]}" | sed 's/,$//')")
else
  p=$(port); redis_start "$p"
  STATE=$(printf '[state]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:%s/0"\non_state_error = "deny"\n' "$p")
fi

# name ip port state: the benchmark's full policy, listening on ip:port.
declare -A ADDR PID
vg_start() {
  local name=$1 ip=$2 port=$3
  render "$ROOT/bench/vendorgate.toml.in" | sed -e "s|127.0.0.1:@VG_PORT@|$ip:$port|" -e "s|@TRAIL@|file|" \
    -e "s|decisions.jsonl|decisions-$name.jsonl|" > "$CONF/vendorgate-$name.toml"
  [ -n "${4:-}" ] && printf '%s\n' "$4" >> "$CONF/vendorgate-$name.toml"
  "$VG" run --config "$CONF/vendorgate-$name.toml" > "$WORK/logs/vg-$name.out" 2> "$WORK/logs/vg-$name.err" &
  pids+=($!); PID[$name]=$!; ADDR[$name]=$ip:$port
}
vg_start memory-a 127.0.0.2 "$(port)"
vg_start memory-b 127.0.0.3 "$(port)"
vg_start redis-a 127.0.0.4 "$(port)" "$STATE"
vg_start redis-b 127.0.0.5 "$(port)" "$STATE"
TOKEN=$(head -1 "$TOKENS")
for name in memory-a memory-b redis-a redis-b; do
  ok=
  for _ in $(seq 100); do
    code=$(curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "https://${ADDR[$name]}/data-2k.json" || true)
    [ "$code" = 200 ] && ok=1 && break
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "$name never answered 200 (last: $code); log:" >&2; tail -5 "$WORK/logs/vg-$name.err" >&2; exit 1; }
done

ticks() { local total=0 p; for p in "$@"; do [ -r /proc/$p/stat ] && total=$((total + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $total; }
HZ=$(getconf CLK_TCK)
RESULTS=$WORK/results.tsv
printf 'round\tmode\trequests\tseconds\treplica_ticks\tredis_ticks\terrors\n' > "$RESULTS"

load() { # name from: one wrk, one thread, CONNS connections, its share of the tokens
  wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$ROOT/bench/wrk/stats.lua" "https://${ADDR[$1]}/data-2k.json" \
    -- "tokens=$TOKENS" "from=$2" "count=$((ACCOUNTS / 2))" threads=1 > "$WORK/logs/wrk-$1.out" 2>&1 || true
}
field() { grep -o "$2=[0-9]*" "$WORK/logs/wrk-$1.out" | head -1 | cut -d= -f2; }

echo "measuring: $ROUNDS rounds of ${DURATION}s, 4 replicas × $CONNS connections, $ACCOUNTS accounts…" >&2
for round in $(seq "$ROUNDS"); do
  mem0=$(ticks "${PID[memory-a]}" "${PID[memory-b]}"); red0=$(ticks "${PID[redis-a]}" "${PID[redis-b]}")
  srv0=$(ticks "${REDIS_PIDS[@]}")
  # Each mode gets the same two halves of the accounts, one per replica.
  load memory-a 0 & w1=$!; load memory-b $((ACCOUNTS / 2)) & w2=$!
  load redis-a 0 & w3=$!; load redis-b $((ACCOUNTS / 2)) & w4=$!
  wait $w1 $w2 $w3 $w4
  mem1=$(ticks "${PID[memory-a]}" "${PID[memory-b]}"); red1=$(ticks "${PID[redis-a]}" "${PID[redis-b]}")
  srv1=$(ticks "${REDIS_PIDS[@]}")
  for mode in memory redis; do
    req=0; us=0; err=0
    for side in a b; do
      n=$(field "$mode-$side" requests); d=$(field "$mode-$side" duration_us)
      e=$(( $(field "$mode-$side" errors) + $(field "$mode-$side" non2xx) ))
      req=$((req + n)); us=$((us > d ? us : d)); err=$((err + e))
    done
    if [ "$mode" = memory ]; then t=$((mem1 - mem0)); s=0; else t=$((red1 - red0)); s=$((srv1 - srv0)); fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$mode" "$req" "$(python3 -c "print($us/1e6)")" "$t" "$s" "$err" >> "$RESULTS"
  done
done

python3 - "$RESULTS" "$HZ" "$CLUSTER" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
hz, cluster = int(sys.argv[2]), sys.argv[3] == "1"
def per_round(mode):
    out = {}
    for r in rows:
        if r["mode"] == mode:
            req = int(r["requests"])
            out[r["round"]] = dict(
                rps=req / float(r["seconds"]),
                cpu=int(r["replica_ticks"]) / hz * 1e6 / max(req, 1),
                cpu_all=(int(r["replica_ticks"]) + int(r["redis_ticks"])) / hz * 1e6 / max(req, 1),
                errors=int(r["errors"]))
    return out
mem, red = per_round("memory"), per_round("redis")
redis_name = "Redis Cluster (3 masters)" if cluster else "one redis-server"
print(f"two replicas in memory vs two on {redis_name}, same moment, 2 KiB, medians of {len(mem)} rounds")
print(f"{'mode':<10}{'req/s':>10}{'CPU µs/req':>12}{'with redis':>12}{'errors':>8}")
for name, m in (("memory", mem), ("redis", red)):
    med = lambda k: statistics.median(v[k] for v in m.values())
    print(f"{name:<10}{med('rps'):>10.0f}{med('cpu'):>12.1f}{med('cpu_all'):>12.1f}{med('errors'):>8.0f}")
rps = statistics.median(red[k]["rps"] / mem[k]["rps"] for k in mem)
cpu = statistics.median(mem[k]["cpu"] / red[k]["cpu"] for k in mem)
cpu_all = statistics.median(mem[k]["cpu"] / red[k]["cpu_all"] for k in mem)
mark = lambda v: "met" if v >= 0.85 else "OPEN"
print(f"redis over memory: req/s {rps:.2f}x ({mark(rps)}), CPU per request {cpu:.2f}x ({mark(cpu)}), "
      f"counting redis-server's CPU {cpu_all:.2f}x (target >= 0.85x)")
PY
echo "raw results: $RESULTS" >&2
