#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 60) with cargo-fuzz on the nightly
# toolchain, and prints each one's executions and coverage. Without a nightly toolchain, or when
# cargo-fuzz cannot be installed, it says so and exits 0 (CI calls it where nightly may be absent);
# a crash exits 1, leaving the input in fuzz/artifacts/<target>/ (make it a regression test).
#   scripts/fuzz.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
shift || true
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: skipped (no nightly toolchain: rustup toolchain list)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  if ! cargo install cargo-fuzz --locked >/tmp/cargo-fuzz-install.log 2>&1; then
    echo "fuzz: skipped (cargo-fuzz could not be installed; see /tmp/cargo-fuzz-install.log)"
    exit 0
  fi
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build -O
# Seeds: the example policies for the config target; short, correctly chained trails (and one with
# a line changed) for the trail reader, so it starts past "not JSON"; Zendesk-shaped bodies for the
# redactor (fuzz/seeds/redact: a first byte for the chunk size, then the body).
mkdir -p fuzz/corpus/config fuzz/corpus/trail_verify fuzz/corpus/redact
cp -n examples/policies/*.toml fuzz/corpus/config/ 2>/dev/null || true
cp -n fuzz/seeds/redact/* fuzz/corpus/redact/ 2>/dev/null || true
if [ ! -e fuzz/corpus/trail_verify/chain-8 ]; then
  for n in 1 3 8; do python3 scripts/sample-trail.py "fuzz/corpus/trail_verify/chain-$n" "$n" >/dev/null; done
  sed '2s/"GET"/"PUT"/' fuzz/corpus/trail_verify/chain-3 > fuzz/corpus/trail_verify/tampered-3
fi
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  log=$(mktemp)
  if cargo +nightly fuzz run -O "$t" "fuzz/corpus/$t" -- -max_total_time="$SECONDS_EACH" \
      -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
    echo "fuzz: $t: ${SECONDS_EACH}s, $execs executions, coverage $cov edges, no crash"
  else
    echo "fuzz: $t: CRASH (input in fuzz/artifacts/$t/)"
    tail -30 "$log"
    status=1
  fi
  rm -f "$log"
done
exit $status
