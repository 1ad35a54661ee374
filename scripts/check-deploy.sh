#!/usr/bin/env bash
# What can be checked of the deploy recipes on a machine without a cluster or a container runtime
# (run by .ci/run after the tests):
#   - every vendorgate config in deploy/ and examples/ passes `vendorgate check --policy-only`;
#   - the Kubernetes manifests validate against the Kubernetes 1.31 schemas, strictly (unknown
#     fields refused), offline (kubernetes-validate from PyPI bundles the schemas), and the
#     kustomization names only files that exist;
#   - the systemd unit passes `systemd-analyze verify` with no warning (its binary path pointed at
#     this build, which verify requires to exist);
#   - deploy/compose.yaml parses, and every service, secret, volume and file it names exists.
# The container image itself is not built here (no container runtime on this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
VG=${VG:-target/debug/vendorgate}
[ -x "$VG" ] || cargo build -q -p vendorgate --bin vendorgate

echo "configs:"
for f in deploy/kubernetes/vendorgate.toml deploy/compose/vendorgate.toml examples/policies/*.toml; do
  "$VG" check --policy-only --config "$f" >/dev/null 2>/tmp/vg-check.$$ || { cat /tmp/vg-check.$$ >&2; rm -f /tmp/vg-check.$$; echo "  $f: FAILED" >&2; exit 1; }
  echo "  $f: passes check"
done
rm -f /tmp/vg-check.$$

# The validator and YAML parser, pinned, beside the script (installed again only when the pinned
# list changes), never system-wide.
deps=scripts/.deploy-check-deps
if ! cmp -s scripts/deploy-check-requirements.txt "$deps/.requirements.txt" 2>/dev/null; then
  rm -rf "$deps"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
    --target "$deps" -r scripts/deploy-check-requirements.txt
  cp scripts/deploy-check-requirements.txt "$deps/.requirements.txt"
fi
export PYTHONPATH=$PWD/$deps

echo "kubernetes:"
manifests=$(python3 - <<'PY'
import os, sys, yaml
base = "deploy/kubernetes"
k = yaml.safe_load(open(os.path.join(base, "kustomization.yaml")))
named = list(k.get("resources", [])) + [f for g in k.get("configMapGenerator", []) for f in g.get("files", [])]
missing = [f for f in named if not os.path.exists(os.path.join(base, f))]
if missing:
    sys.exit(f"kustomization.yaml names files that do not exist: {missing}")
print(" ".join(os.path.join(base, f) for f in k["resources"]))
PY
)
python3 -m kubernetes_validate -k 1.31.0 --strict --quiet $manifests
echo "  $(echo "$manifests" | wc -w) manifests valid against Kubernetes 1.31 (strict)"

echo "systemd:"
if command -v systemd-analyze >/dev/null 2>&1; then
  unit_dir=$(mktemp -d)
  sed "s|/usr/local/bin/vendorgate|$PWD/$VG|g" deploy/vendorgate.service > "$unit_dir/vendorgate.service"
  out=$(systemd-analyze verify "$unit_dir/vendorgate.service" 2>&1) || { echo "$out" >&2; exit 1; }
  rm -rf "$unit_dir"
  [ -z "$out" ] || { echo "$out" >&2; echo "  deploy/vendorgate.service: warnings" >&2; exit 1; }
  echo "  deploy/vendorgate.service: verified"
else
  echo "  systemd-analyze not installed: the unit was not verified"
fi

echo "compose:"
python3 - <<'PY'
import os, sys, yaml
path = "deploy/compose.yaml"
c = yaml.safe_load(open(path))
here = os.path.dirname(path)
problems = []
services, secrets, volumes = c["services"], c.get("secrets", {}), c.get("volumes", {})
for name, s in services.items():
    if not ("image" in s or "build" in s):
        problems.append(f"{name}: neither image nor build")
    b = s.get("build")
    if b and not os.path.exists(os.path.join(here, b["context"], b["dockerfile"])):
        problems.append(f"{name}: no {b['dockerfile']}")
    for d in s.get("depends_on", {}):
        if d not in services:
            problems.append(f"{name}: depends on unknown service {d}")
    for sec in s.get("secrets", []):
        if sec not in secrets:
            problems.append(f"{name}: unknown secret {sec}")
    for v in s.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            # Local secrets and certificates are made by the user (see compose.yaml's header).
            if "/tls" not in src and not os.path.exists(os.path.join(here, src)):
                problems.append(f"{name}: no {src}")
        elif src not in volumes:
            problems.append(f"{name}: unknown volume {src}")
collector = os.path.join(here, "compose/otel-collector.yaml")
yaml.safe_load(open(collector))
if problems:
    sys.exit("\n".join(problems))
print(f"  {path}: {len(services)} services, every name and file it uses exists")
PY
