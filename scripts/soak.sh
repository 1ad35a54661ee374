#!/usr/bin/env bash
# A bounded soak on loopback: vendorgate in front of an nginx origin for MINUTES (default 30), under
# a mix of allowed, denied, rate-limited, byte-capped and cut-off requests over HTTP/1.1 (wrk, 200
# connections) and HTTP/2 (curl, multiplexed), with clients that vanish mid-download. It stops by
# itself and reports, every 30 s: the proxy's RSS and open file descriptors; at the end: decision
# records against the requests the proxy counted (they must be equal), and `audit verify`.
#   scripts/soak.sh [MINUTES]        needs wrk, nginx, curl (installed with apt when missing)
#   RATE=8000 scripts/soak.sh 30     wrk paced to about RATE requests a second (default: flat out)
#   SAMPLES=soak.csv                 keeps the 30-second samples (scripts/soak-plot.py draws them)
# Disk: every request is a record (~1 KB). Flat out (~35,000 requests a second on 2 cores) that is
# about 2.2 GB of trail a minute; RATE bounds it. It refuses to start without room for what it will
# write, and removes its work directory at the end (KEEP=1 keeps it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MINUTES=${1:-30}
RATE=${RATE:-}
# GB a minute: ~1.05 KB a record, 60 s; the HTTP/2 and vanishing clients add ~1,500 a second.
if [ -n "$RATE" ]; then
  need_gb=$(( MINUTES * (RATE + 1500) * 63 / 1000000 + 2 ))
else
  need_gb=$(( MINUTES * 22 / 10 + 2 ))
fi
free_gb=$(df -P -BG /tmp | awk 'NR == 2 {sub("G", "", $4); print $4}')
if [ "$free_gb" -lt "$need_gb" ]; then
  echo "soak: needs about ${need_gb} GB free in /tmp for ${MINUTES} min of decision records; ${free_gb} GB free" >&2
  exit 2
fi
WORK=$(mktemp -d /tmp/vg-soak.XXXXXX)
mkdir -p "$WORK"/{www,tls,keys,logs,run,tmp}
chmod 755 "$WORK" "$WORK"/www "$WORK"/logs "$WORK"/tmp "$WORK"/run
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
missing=()
for p in wrk nginx curl; do command -v "$p" >/dev/null || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
(cd "$ROOT" && cargo build --release -q -p vendorgate -p vendorgate-mock --bin vendorgate --bin bench-idp)
VG=$ROOT/target/release/vendorgate
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(port); VG_PORT=$(port); ADMIN_PORT=$(port)

python3 - "$WORK/www" <<'PY'
import sys
def doc(size):
    head, tail = '{"tickets":"', '"}'
    return head + "x" * (size - len(head) - len(tail)) + tail
for name, size in [("ticket", 2048), ("export", 256 * 1024), ("attachment", 8 << 20)]:
    open(f"{sys.argv[1]}/{name}.json", "w").write(doc(size))
PY
"$VG" certs dev --out "$WORK/tls" >/dev/null
"$ROOT/target/release/bench-idp" "$WORK/keys" 50 >/dev/null
TOKEN=$(cat "$WORK/keys/token.txt")
sed -e "s|@WORK@|$WORK|g" -e "s|@UP_PORT@|$UP_PORT|g" "$ROOT/bench/peers/upstream-nginx.conf" > "$WORK/upstream.conf"
chown -R www-data "$WORK/www" "$WORK/tmp" "$WORK/logs" 2>/dev/null || true

# The policy: tickets allowed; exports rate-limited (20 a second per account) and every account's
# bytes capped (1 GiB a minute: the account that keeps starting 8 MiB attachments runs into it and
# is cut mid-body); the admin API denied; everything else unknown (default deny).
cat > "$WORK/vendorgate.toml" <<EOF
[server]
listen = "127.0.0.1:$VG_PORT"
tls_cert = "$WORK/tls/server.pem"
tls_key = "$WORK/tls/server-key.pem"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[log]
level = "error"
[upstream]
url = "http://127.0.0.1:$UP_PORT"
http2 = false
[identity]
issuer = "https://idp.bench"
audiences = ["vendorgate"]
jwks_file = "$WORK/keys/jwks.json"
algorithms = ["ES256"]
[trail]
path = "$WORK/logs/decisions.jsonl"
max_file_size = "256MiB"
[[vendors]]
id = "bench"
ip_allow = ["127.0.0.0/8"]
classes = ["read", "export"]
[[routes]]
path = "/ticket"
class = "read"
[[routes]]
path = "/attachment"
class = "read"
[[routes]]
path = "/export"
class = "export"
[[routes]]
path = "/api/v2/account/**"
deny = true
[[limits.rate]]
id = "exports"
per = "account"
classes = ["export"]
requests = 20
period = "1s"
[[limits.egress]]
id = "bytes"
per = "account"
max = "1GiB"
window = "1m"
EOF

nginx -c "$WORK/upstream.conf" & pids+=($!)
"$VG" run --config "$WORK/vendorgate.toml" >"$WORK/logs/vg.out" 2>"$WORK/logs/vg.err" & VG_PID=$!; pids+=($VG_PID)
for _ in $(seq 100); do grep -q 'vendorgate listening' "$WORK/logs/vg.out" 2>/dev/null && break; sleep 0.1; done
URL=https://localhost:$VG_PORT

# HTTP/1.1: wrk with a mix of paths, one token per connection from the 50 accounts.
cat > "$WORK/mix.lua" <<'LUA'
local paths = {"/ticket.json", "/ticket.json", "/ticket.json", "/ticket.json", "/ticket.json",
               "/export.json", "/export.json", "/api/v2/account/settings.json", "/nowhere.json"}
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local n = 0
function setup(thread) n = n + 1; thread:set("token", tokens[(n % #tokens) + 1]) end
function request()
  return wrk.format("GET", paths[math.random(#paths)], {["Authorization"] = "Bearer " .. token})
end
-- Paced (RATE): each of the 200 connections waits this long between its requests.
local pause = tonumber(os.getenv("PAUSE_MS") or "0")
if pause > 0 then function delay() return pause end end
LUA
SECS=$((MINUTES * 60))
PAUSE_MS=0
[ -n "$RATE" ] && PAUSE_MS=$(( 200 * 1000 / RATE ))
export PAUSE_MS
TOKENS=$WORK/keys/tokens.txt wrk -t2 -c200 -d"${SECS}s" -s "$WORK/mix.lua" "$URL" >"$WORK/logs/wrk.txt" 2>&1 & pids+=($!)
# HTTP/2: batches of 50 multiplexed requests; and clients that give up on an attachment mid-body.
(
  end=$((SECONDS + SECS))
  while [ $SECONDS -lt $end ]; do
    args=()
    for i in $(seq 50); do
      args+=(-o /dev/null "$URL/ticket.json" -o /dev/null "$URL/export.json" -o /dev/null "$URL/nowhere.json")
    done
    curl -sk --http2 --parallel --parallel-max 50 -H "Authorization: Bearer $TOKEN" "${args[@]}" >/dev/null 2>&1 || true
  done
) & pids+=($!)
(
  end=$((SECONDS + SECS))
  while [ $SECONDS -lt $end ]; do
    curl -sk --http2 --max-time 0.05 -H "Authorization: Bearer $TOKEN" -o /dev/null "$URL/attachment.json" >/dev/null 2>&1 || true
    curl -sk --http1.1 --max-time 0.05 -H "Authorization: Bearer $TOKEN" -o /dev/null "$URL/attachment.json" >/dev/null 2>&1 || true
  done
) & pids+=($!)

echo "soak: ${MINUTES} min against $URL${RATE:+, wrk paced to ~$RATE/s} (work dir $WORK)"
metric() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
requests_so_far() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^vendorgate_requests_total/ {s += $2} END {print s}'; }
SAMPLES_CSV=$WORK/samples.csv
echo "minute,rss_mib,fds,connections,in_flight,upstream_connections,requests,trail_mb" >"$SAMPLES_CSV"
echo "minute  rss_mib  fds  connections  in_flight  upstream  requests  trail_mb"
start=$SECONDS
while [ $((SECONDS - start)) -lt "$SECS" ]; do
  sleep 30
  minute=$(awk -v s=$((SECONDS - start)) 'BEGIN {printf "%.1f", s / 60}')
  rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$VG_PID/status")
  fds=$(ls "/proc/$VG_PID/fd" | wc -l)
  trail=$(du -sm "$WORK/logs" | cut -f1)
  row=("$minute" "$rss" "$fds" "$(metric vendorgate_connections_open)" "$(metric vendorgate_requests_in_flight)" \
       "$(metric vendorgate_upstream_connections_open)" "$(requests_so_far)" "$trail")
  (IFS=,; echo "${row[*]}") >>"$SAMPLES_CSV"
  printf "%6s  %7s  %3s  %11s  %9s  %8s  %8s  %8s\n" "${row[@]}"
done
[ -n "${SAMPLES:-}" ] && cp "$SAMPLES_CSV" "$SAMPLES"
wait "${pids[@]:2}" 2>/dev/null || true
sleep 3   # the trail's writer syncs at least every second
in_flight=$(metric vendorgate_requests_in_flight)
echo "requests in flight after the load: $in_flight"
requests=$(requests_so_far)
records=$(cat "$WORK"/logs/decisions*.jsonl | grep -c '"action":"http_request"' || true)
echo "requests decided (metrics) $requests; records $records"
grep -E "Requests/sec|requests in" "$WORK/logs/wrk.txt" | sed 's/^/wrk: /'
python3 - "$WORK/logs" <<'PY'
import collections, glob, json, sys
c = collections.Counter()
for f in glob.glob(sys.argv[1] + "/decisions*.jsonl"):
    for line in open(f):
        r = json.loads(line)
        if r.get("event", {}).get("action") == "http_request":
            v = r["vendorgate"]
            c[(v["reason"], v.get("cut_off"), v.get("abandoned") is not None)] += 1
for (reason, cut, abandoned), n in sorted(c.items(), key=lambda kv: -kv[1]):
    print(f"  {n:>9}  {reason}{' cut off' if cut else ''}{' abandoned' if abandoned else ''}")
PY
"$VG" audit verify "$WORK"/logs/decisions*.jsonl | tail -1
[ "$in_flight" = 0 ] || { echo "soak: requests left in flight"; exit 1; }
[ "$requests" = "$records" ] && echo "soak: records = requests" || { echo "soak: MISMATCH"; exit 1; }
