#!/usr/bin/env bash
# Memory per idle keep-alive TLS connection: opens N connections (default 10,000; the open-files
# limit caps it), each answering one request and then left open and silent, and prints
# vendorgate's RSS before and with them open.
#
#   bench/idle.sh [N]              # HTTP/1.1 (parked when idle)
#   PROTO=h2 bench/idle.sh [N]     # HTTP/2, as browsers connect
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-10000}
PROTO=${PROTO:-http/1.1}
(cd "$ROOT" && cargo build -q --release -p vendorgate --bin vendorgate -p vendorgate-mock --bin bench-idp)
WORK=$(mktemp -d /tmp/vg-idle.XXXXXX)
trap 'kill $VG_PID 2>/dev/null || true' EXIT
"$ROOT/target/release/vendorgate" certs dev --out "$WORK/certs" >/dev/null
"$ROOT/target/release/bench-idp" "$WORK/keys" 1
cat > "$WORK/vg.toml" <<TOML
[server]
listen = "127.0.0.1:0"
tls_cert = "certs/server.pem"
tls_key = "certs/server-key.pem"
idle_timeout = "10m"
tls_handshake_timeout = "10m"
max_connections = 20000
[admin]
listen = "127.0.0.1:0"
[log]
level = "error"
[upstream]
url = "http://127.0.0.1:9"
[identity]
issuer = "https://idp.bench"
audiences = ["vendorgate"]
jwks_file = "keys/jwks.json"
[[vendors]]
id = "bench"
ip_allow = ["127.0.0.0/8"]
classes = ["read"]
[[routes]]
path = "/**"
class = "read"
TOML
"$ROOT/target/release/vendorgate" run --config "$WORK/vg.toml" > "$WORK/out.txt" 2> "$WORK/err.txt" &
VG_PID=$!
for _ in $(seq 50); do grep -q proxy= "$WORK/out.txt" 2>/dev/null && break; sleep 0.1; done
PORT=$(grep -o 'proxy=127.0.0.1:[0-9]*' "$WORK/out.txt" | cut -d: -f2)
rss() { awk '/VmRSS/{print $2}' /proc/$VG_PID/status; }
BASE=$(rss)
python3 "$ROOT/bench/idle_client.py" "$PORT" "$N" 600 "$PROTO" > "$WORK/client.txt" 2>&1 &
CLIENT=$!
for _ in $(seq 600); do  # until the client has opened (and used) all it could
  grep -q '^open' "$WORK/client.txt" 2>/dev/null && break
  sleep 1
done
# The proxy hands freed pages back at most every 5 s after a wave of idle connections.
sleep 6
open=$(( $(ls /proc/$VG_PID/fd | wc -l) - 20 ))
NOW=$(rss)
kill $CLIENT 2>/dev/null || true
echo "client ($PROTO): $(head -1 "$WORK/client.txt")"
echo "idle connections: ~$open; RSS ${BASE} KiB at rest, ${NOW} KiB with them open;" \
  "$(( (NOW - BASE) * 1024 / (open > 0 ? open : 1) )) bytes per idle connection;" \
  "projected at 10,000: $(( BASE / 1024 + (NOW - BASE) * 10000 / (open > 0 ? open : 1) / 1024 )) MiB"
