#!/usr/bin/env bash
# Instructions per request, counted by callgrind: the figure that does not drift with machine noise
# (timings on a shared 2-core machine move ±10–15% between runs; this moves well under 1%). Use it
# to tell whether a change to the request path made it cheaper, then confirm with bench/run.sh.
#
#   bench/instructions.sh              # warm path: one token, full policy, 2 KiB bodies
#   COLD=1 bench/instructions.sh       # every request carries a token never seen before
#   TOP=25 bench/instructions.sh       # also list the 25 costliest functions (self cost)
#
# vendorgate runs under valgrind with one worker and the bench policy (bench/vendorgate.toml.in),
# in front of the nginx origin of bench/run.sh; wrk sends from 4 connections. Only the requests sent
# while counting is on are counted, after a warm-up. ring's hand-written assembly (SHA-256,
# AES-GCM, P-256) is counted on valgrind's emulated CPU, which lacks the SHA extensions: crypto
# weighs more here than on the real machine, so on the warm path the figure "outside ring" is the
# one to compare for changes elsewhere. On the cold path compare the total: how much of P-256 the
# compiler inlines into its callers moves between builds, and with it what counts as "ring".
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
COLD=${COLD:-0}
DURATION=${DURATION:-10}
TOP=${TOP:-0}
missing=()
for tool in valgrind wrk nginx; do command -v $tool >/dev/null 2>&1 || missing+=("$tool"); done
PATH=$PATH:/usr/sbin
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] && SUDO="" || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind wrk nginx >/dev/null
fi
(cd "$ROOT" && cargo build -q --release -p vendorgate --bin vendorgate -p vendorgate-mock --bin bench-idp)
VG=$ROOT/target/release/vendorgate
WORK=$(mktemp -d /tmp/vg-instr.XXXXXX)
mkdir -p "$WORK"/{logs,www}
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

"$VG" certs dev --out "$WORK/tls" >/dev/null
"$ROOT/target/release/bench-idp" "$WORK/keys" $((COLD == 1 ? 30000 : 1)) >/dev/null
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(port); VG_PORT=$(port)

# The origin: the same nginx serving the same 2 KiB file as in bench/run.sh.
mkdir -p "$WORK"/{run,tmp}
chmod 755 "$WORK" "$WORK"/www "$WORK"/logs "$WORK"/tmp "$WORK"/run
python3 -c 'import sys; h, t = "{\"tickets\":\"", "\"}"; open(sys.argv[1], "w").write(h + "x" * (2048 - len(h) - len(t)) + t)' \
  "$WORK/www/data-2k.json"
chown -R www-data "$WORK/www" "$WORK/tmp" "$WORK/logs" 2>/dev/null || true
sed -e "s|@WORK@|$WORK|g" -e "s|@UP_PORT@|$UP_PORT|g" "$ROOT/bench/peers/upstream-nginx.conf" > "$WORK/upstream.conf"
nginx -c "$WORK/upstream.conf" -e "$WORK/logs/upstream_error.log" &
pids+=($!)

sed -e "s|@WORK@|$WORK|g" -e "s|@VG_PORT@|$VG_PORT|" -e "s|@UP_PORT@|$UP_PORT|" -e "s|@TRAIL@|file|" \
  -e 's|@ALLOWLIST@|"127.0.0.0/8"|' -e 's|^\[server\]|[server]\nworkers = 1|' \
  "$ROOT/bench/vendorgate.toml.in" > "$WORK/vendorgate.toml"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out" \
  "$VG" run --config "$WORK/vendorgate.toml" > "$WORK/logs/vg.out" 2> "$WORK/logs/vg.err" &
VG_PID=$!
pids+=($VG_PID)
for _ in $(seq 300); do grep -q proxy= "$WORK/logs/vg.out" 2>/dev/null && break; sleep 0.1; done
grep -q proxy= "$WORK/logs/vg.out" || { echo "vendorgate did not start:" >&2; cat "$WORK/logs/vg.err" >&2; exit 1; }

URL=https://127.0.0.1:$VG_PORT/data-2k.json
send() { # seconds, first token line: prints wrk's output
  if [ "$COLD" = 1 ]; then
    wrk -t1 -c4 -d"$1"s -s "$ROOT/bench/wrk/stats.lua" "$URL" -- \
      tokens="$WORK/keys/tokens.txt" from="$2" count=$((30000 - $2)) threads=1
  else
    wrk -t1 -c4 -d"$1"s -H "Authorization: Bearer $(cat "$WORK/keys/token.txt")" "$URL"
  fi
}
send 3 0 > "$WORK/logs/warmup.txt"
warm=$(grep -o '[0-9]* requests in' "$WORK/logs/warmup.txt" | cut -d' ' -f1)
callgrind_control -i on "$VG_PID" >/dev/null 2>&1
out=$(send "$DURATION" "$((warm + 100))")
callgrind_control -i off "$VG_PID" >/dev/null 2>&1
callgrind_control -d "$VG_PID" >/dev/null 2>&1
n=$(grep -o '[0-9]* requests in' <<<"$out" | cut -d' ' -f1)
if [ "$COLD" = 1 ] && ! grep -q 'reused=0' <<<"$out"; then
  echo "warning: some tokens were sent twice: not every request was cold" >&2
fi
if grep -q 'Non-2xx' <<<"$out"; then
  echo "warning: some responses were not 2xx:" >&2
  grep 'Non-2xx' <<<"$out" >&2
fi
kill "$VG_PID"; wait "$VG_PID" 2>/dev/null || true
FILE=$(ls -S "$WORK"/callgrind.out* | head -1)
total=$(awk '/^totals:/ {print $2}' "$FILE")
ring=$(callgrind_annotate --auto=no --threshold=100 "$FILE" | grep -E '^ *[0-9,]+ \(' |
  grep -E 'ring-0|ring_core' | awk '{gsub(",", "", $1); s += $1} END {printf "%d", s}')
echo "$([ "$COLD" = 1 ] && echo cold || echo warm) path, $n requests counted:" \
  "$((total / n)) instructions per request, $(((total - ring) / n)) outside ring"
if [ "$TOP" -gt 0 ]; then
  callgrind_annotate --auto=no "$FILE" | grep -E '^ *[0-9,]+ \(' | sed 1d | head -"$TOP" |
    awk -v n="$n" '{c=$1; gsub(",", "", c); $1=""; $2=""; printf "%9d %s\n", c / n, substr($0, 3, 150)}'
fi
echo "raw profile: $FILE (callgrind_annotate --inclusive=yes $FILE)"
