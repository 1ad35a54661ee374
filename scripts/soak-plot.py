#!/usr/bin/env python3
"""Draws the samples of `SAMPLES=soak.csv scripts/soak.sh` as a small SVG: the proxy's resident
memory and open file descriptors over the run, and the requests decided. Plain Python, no plotting
library: python3 scripts/soak-plot.py soak.csv docs/soak.svg"""
import csv
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
minutes = [float(r["minute"]) for r in rows]
series = [
    ("resident memory (MiB)", [float(r["rss_mib"]) for r in rows], "#c0392b", 128),
    ("open file descriptors", [float(r["fds"]) for r in rows], "#2471a3", 1024),
]
requests = int(float(rows[-1]["requests"]))

W, H, L, R, T, B = 720, 300, 60, 60, 40, 40
pw, ph = W - L - R, H - T - B
span = max(minutes[-1], 1.0)


def x(m):
    return L + pw * m / span


def y(v, top):
    return T + ph * (1 - v / top)


out = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
    f'<rect width="{W}" height="{H}" fill="white"/>',
    f'<text x="{L}" y="22" font-size="14">vendorgate soak: {span:.0f} min, {requests:,} requests decided, '
    f"every one recorded</text>",
    f'<line x1="{L}" y1="{T + ph}" x2="{L + pw}" y2="{T + ph}" stroke="#888"/>',
]
for tick in range(0, int(span) + 1, 5):
    out.append(f'<text x="{x(tick):.1f}" y="{T + ph + 16}" text-anchor="middle" fill="#555">{tick}</text>')
out.append(f'<text x="{L + pw / 2}" y="{H - 6}" text-anchor="middle" fill="#555">minutes</text>')
for i, (label, values, colour, top) in enumerate(series):
    axis_x = L if i == 0 else L + pw
    anchor = "end" if i == 0 else "start"
    dx = -6 if i == 0 else 6
    out.append(f'<line x1="{axis_x}" y1="{T}" x2="{axis_x}" y2="{T + ph}" stroke="{colour}"/>')
    for frac in (0, 0.5, 1):
        v = top * frac
        out.append(
            f'<text x="{axis_x + dx}" y="{y(v, top) + 4:.1f}" text-anchor="{anchor}" fill="{colour}">{v:.0f}</text>'
        )
    points = " ".join(f"{x(m):.1f},{y(v, top):.1f}" for m, v in zip(minutes, values))
    out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
    lo, hi = min(values), max(values)
    out.append(
        f'<text x="{L + 10 + i * 300}" y="{T + 14}" fill="{colour}">{label}: {lo:.0f}–{hi:.0f}</text>'
    )
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
