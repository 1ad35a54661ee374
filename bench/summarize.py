#!/usr/bin/env python3
"""Medians over rounds and the ratios the performance issue asks for, from bench/run.sh's TSV."""
import csv, statistics, sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
groups = defaultdict(list)
for r in rows:
    groups[(r["case"], r["body"], r["conns"])].append(r)

def med(key, field):
    vals = [float(r[field]) for r in groups.get(key, []) if r.get(field) not in ("-", "", None)]
    return statistics.median(vals) if vals else float("nan")

cases = ["direct", "nginx", "haproxy", "vendorgate", "haproxy-cold", "vendorgate-cold",
         "vendorgate-reference", "vendorgate-trail-off", "vendorgate-large", "vendorgate-10-accounts",
         "vendorgate-100k-accounts", "direct-half", "nginx-half", "vendorgate-half"]
print(f"{'case':<26}{'body':>5}{'conns':>6}{'req/s':>10}{'p50 µs':>9}{'p99 µs':>9}{'p99.9 µs':>10}{'CPU µs/req':>12}{'errors':>8}")
# The 2 KiB / 32 comparisons from the 10-accounts case on are listed after the matrix.
late = cases.index("vendorgate-10-accounts")
for key in sorted(groups, key=lambda k: (cases.index(k[0]) >= late, k[1], int(k[2]), cases.index(k[0]) if k[0] in cases else 99)):
    print(f"{key[0]:<26}{key[1]:>5}{key[2]:>6}{med(key,'rps'):>10.0f}{med(key,'p50_us'):>9.0f}{med(key,'p99_us'):>9.0f}"
          f"{med(key,'p999_us'):>10.0f}{med(key,'cpu_us_per_req'):>12.1f}{med(key,'errors'):>8.0f}")
print()

def ratio(label, a, b, field="rps"):
    x, y = med(a, field), med(b, field)
    if x == x and y == y and y:
        print(f"  {label} = {x / y:.2f}")

print("ratios (req/s, medians):")
for body in sorted({k[1] for k in groups if k[0] == "vendorgate"}):
    for conns in sorted({k[2] for k in groups if k[0] == "vendorgate"}, key=int):
        for other in ["haproxy", "nginx", "direct"]:
            ratio(f"{body} / {conns} conns: vendorgate/{other}", ("vendorgate", body, conns), (other, body, conns))

def paired(label, a, b):
    """The median of the per-round ratios of two cases run side by side (see bench/run.sh)."""
    rps = lambda case: {r["round"]: float(r["rps"]) for r in groups.get((case, "2k", "32"), [])}
    x, y = rps(a), rps(b)
    per_round = [x[n] / y[n] for n in sorted(x, key=int) if n in y and y[n]]
    if per_round:
        rounds = ", ".join(f"{v:.2f}" for v in per_round)
        print(f"  {label} = {statistics.median(per_round):.2f} (per round {rounds})")

print("paired (2k / 32, median of per-round ratios):")
paired("cold path (every token new): vendorgate/haproxy", "vendorgate-cold", "haproxy-cold")
paired("decision trail: on / off", "vendorgate-reference", "vendorgate-trail-off")
paired("scale: 10,000 CIDRs + 1,000 routes / small policy", "vendorgate-large", "vendorgate-reference")
paired("scale: 100,000 accounts / 10 accounts", "vendorgate-100k-accounts", "vendorgate-10-accounts")
cpu_v, cpu_n = med(("vendorgate", "2k", "32"), "cpu_us_per_req"), med(("nginx", "2k", "32"), "cpu_us_per_req")
print(f"  CPU per request, 2k / 32: vendorgate {cpu_v:.1f} µs, nginx {cpu_n:.1f} µs")
half = {c: med((c, "2k", "32"), "p99_us") for c in ["direct-half", "nginx-half", "vendorgate-half"]}
if half["vendorgate-half"] == half["vendorgate-half"]:
    print(f"  half load, 2k / 32: p99 vendorgate {half['vendorgate-half']:.0f} µs, direct {half['direct-half']:.0f} µs, "
          f"nginx {half['nginx-half']:.0f} µs; overhead vs direct {(half['vendorgate-half'] - half['direct-half']) / 1000:.2f} ms")
reused = [r for r in rows if r["case"].endswith("cold") and r.get("reused", "0") not in ("0", "")]
for r in reused:
    print(f"  warning: {r['case']} round {r['round']} reused {r['reused']} tokens (COLD_SLICE too small)")
print()
print(open(sys.argv[2]).read().strip())
