#!/usr/bin/env bash
# Scans a running vendorgate's TLS with sslyze (from PyPI, installed beside this script's output on
# first use) and summarizes: protocols offered, cipher suites, known vulnerabilities, the chain.
#   scripts/tls-scan.sh                    starts `vendorgate demo` on a free loopback port and scans it
#   scripts/tls-scan.sh HOST:PORT CA.pem   scans a proxy you run (CA: what signs its certificate)
# Exits 1 if anything below TLS 1.2, a weak suite or a vulnerability is found. Loopback only in the
# demo form; nothing leaves the machine but the PyPI install.
set -euo pipefail
cd "$(dirname "$0")/.."
DEPS=${SSLYZE_DEPS:-target/tls-scan/pydeps}
if ! PYTHONPATH=$DEPS python3 -c 'import sslyze' 2>/dev/null; then
  echo "tls-scan: installing sslyze into $DEPS"
  python3 -m pip install --quiet --disable-pip-version-check --target "$DEPS" 'sslyze==6.*'
fi
demo_pid=
cleanup() { [ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null || true; }
trap cleanup EXIT
if [ $# -ge 2 ]; then
  target=$1 ca=$2
else
  cargo build --release -q -p vendorgate
  out=$(mktemp)
  target/release/vendorgate demo --port 0 >"$out" 2>/dev/null &
  demo_pid=$!
  for _ in $(seq 50); do grep -q 'vendorgate listening' "$out" && break; sleep 0.2; done
  port=$(grep -o 'proxy=127.0.0.1:[0-9]*' "$out" | head -1 | cut -d: -f2)
  ca=$(grep -o -- '--cacert [^ ]*' "$out" | head -1 | cut -d' ' -f2)
  target=localhost:$port
fi
json=$(mktemp)
# PYTHONWARNINGS: sslyze's own bundled trust stores hold a root with a non-positive serial, which
# `cryptography` warns about on every run; it says nothing about the server scanned.
PYTHONWARNINGS=ignore PYTHONPATH=$DEPS python3 -m sslyze --quiet --certinfo --certinfo_ca_file "$ca" \
  --sslv2 --sslv3 --tlsv1 --tlsv1_1 --tlsv1_2 --tlsv1_3 --heartbleed --robot --openssl_ccs \
  --reneg --compression --fallback --early_data --elliptic_curves \
  --json_out "$json" "$target" >/dev/null
python3 - "$json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["server_scan_results"][0]["scan_result"]
def res(name): return (r.get(name) or {}).get("result") or {}
bad = []
for proto in ["ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1", "tls_1_2", "tls_1_3"]:
    suites = res(f"{proto}_cipher_suites").get("accepted_cipher_suites", [])
    names = [s["cipher_suite"]["name"] for s in suites]
    print(f"{proto:8} {'offered' if names else 'refused'}{': ' + ', '.join(names) if names else ''}")
    if names and proto in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
        bad.append(f"{proto} offered")
    weak = [n for n in names if any(w in n for w in ("RC4", "3DES", "NULL", "EXPORT", "_CBC_", "anon"))]
    if weak:
        bad.append(f"weak suites in {proto}: {weak}")
vulns = {
    "heartbleed": res("heartbleed").get("is_vulnerable_to_heartbleed"),
    "openssl_ccs_injection": res("openssl_ccs_injection").get("is_vulnerable_to_ccs_injection"),
    "robot": res("robot").get("robot_result") not in (None, "NOT_VULNERABLE_NO_ORACLE", "NOT_VULNERABLE_RSA_NOT_SUPPORTED"),
    "client_renegotiation_dos": res("session_renegotiation").get("is_vulnerable_to_client_renegotiation_dos"),
    "compression (CRIME)": res("tls_compression").get("supports_compression"),
    "no downgrade protection": res("tls_fallback_scsv").get("supports_fallback_scsv") is False,
    "0-RTT early data": res("tls_1_3_early_data").get("supports_early_data"),
}
for k, v in vulns.items():
    print(f"{k:26} {'VULNERABLE' if v else 'no'}")
    if v:
        bad.append(k)
curves = res("elliptic_curves").get("supported_curves") or []
print("curves   ", ", ".join(c["name"] for c in curves))
deploy = (res("certificate_info").get("certificate_deployments") or [{}])[0]
chain_ok = deploy.get("received_chain_has_valid_order")
trusted = [p for p in deploy.get("path_validation_results", []) if p.get("was_validation_successful")]
print(f"chain     {'in order' if chain_ok else 'OUT OF ORDER'}; {'trusted by the given CA' if trusted else 'NOT trusted by the given CA'}")
if not chain_ok or not trusted:
    bad.append("certificate chain")
print("result   ", "PASS" if not bad else "FAIL: " + "; ".join(bad))
sys.exit(1 if bad else 0)
PY
