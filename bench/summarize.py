#!/usr/bin/env python3
"""Medians over rounds and the ratios the performance issue asks for, from bench/run.sh's TSV."""
import csv, statistics, sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
groups = defaultdict(list)
for r in rows:
    groups[(r["case"], r["body"], r["conns"])].append(r)

def med(key, field):
    vals = [float(r[field]) for r in groups.get(key, []) if r[field] not in ("-", "")]
    return statistics.median(vals) if vals else float("nan")

cases = ["direct", "nginx", "haproxy", "vendorgate", "haproxy-cold", "vendorgate-cold", "vendorgate-trail-off"]
print(f"{'case':<22}{'body':>5}{'conns':>6}{'req/s':>10}{'p50 µs':>9}{'p99 µs':>9}{'p99.9 µs':>10}{'CPU µs/req':>12}{'errors':>8}")
for key in sorted(groups, key=lambda k: (k[1], int(k[2]), cases.index(k[0]) if k[0] in cases else 99)):
    print(f"{key[0]:<22}{key[1]:>5}{key[2]:>6}{med(key,'rps'):>10.0f}{med(key,'p50_us'):>9.0f}{med(key,'p99_us'):>9.0f}"
          f"{med(key,'p999_us'):>10.0f}{med(key,'cpu_us_per_req'):>12.1f}{med(key,'errors'):>8.0f}")
print()
print("ratios (req/s, medians):")
for body in sorted({k[1] for k in groups}):
    for conns in sorted({k[2] for k in groups}, key=int):
        v = med(("vendorgate", body, conns), "rps")
        for other in ["haproxy", "nginx", "direct"]:
            o = med((other, body, conns), "rps")
            if o == o and v == v:
                print(f"  {body} / {conns} conns: vendorgate/{other} = {v / o:.2f}")
cold_v, cold_h = med(("vendorgate-cold", "2k", "32"), "rps"), med(("haproxy-cold", "2k", "32"), "rps")
if cold_v == cold_v:
    print(f"  cold path (10,000 tokens), 2k / 32: vendorgate/haproxy = {cold_v / cold_h:.2f}")
on, off = med(("vendorgate", "2k", "32"), "rps"), med(("vendorgate-trail-off", "2k", "32"), "rps")
if off == off:
    print(f"  decision trail cost, 2k / 32: trail on / off = {on / off:.2f}")
cpu_v, cpu_n = med(("vendorgate", "2k", "32"), "cpu_us_per_req"), med(("nginx", "2k", "32"), "cpu_us_per_req")
print(f"  CPU per request, 2k / 32: vendorgate {cpu_v:.1f} µs, nginx {cpu_n:.1f} µs")
print()
print(open(sys.argv[2]).read().strip())
