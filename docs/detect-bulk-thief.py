# Draws docs/detect-bulk-thief.png from `vendorgate simulate --curve /tmp/curve.csv` (needs matplotlib;
# not part of the build or the tests): python3 docs/detect-bulk-thief.py docs/detect-bulk-thief.png
import csv, sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = list(csv.DictReader(open("/tmp/curve.csv")))
t = [int(r["seconds"]) for r in rows]
b = [int(r["bytes"]) / 2**20 for r in rows]
lock_t = t[-1]
# Without the lock: the same pace (2.5 MB every 6 s) for ten minutes.
proj_t = list(range(lock_t, 601, 6))
proj_b = [b[-1] + (x - lock_t) / 6 * 2_500_000 / 2**20 for x in proj_t]
fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
ax.step(t, b, where="post", color="#c0392b", linewidth=2, label="taken (through vendorgate)")
ax.plot(proj_t, proj_b, linestyle="--", color="#999", label="without the lock")
ax.axvline(lock_t, color="#6c3483", linewidth=1.5)
ax.annotate(f"locked after {lock_t} s, {b[-1]:.1f} MiB", xy=(lock_t, b[-1]), xytext=(lock_t + 25, b[-1] + 60),
            arrowprops=dict(arrowstyle="->", color="#6c3483"), color="#6c3483")
ax.axhline(50, color="#1f618d", linestyle=":", linewidth=1)
ax.text(590, 53, "target: < 50 MiB", ha="right", color="#1f618d")
ax.set_xlabel("seconds since the thief's first request")
ax.set_ylabel("MiB taken")
ax.set_title("ManoMano-style bulk export on a stolen account (vendorgate simulate)")
ax.set_xlim(0, 600); ax.set_ylim(0, max(proj_b) * 1.05)
ax.legend(loc="upper left"); ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(sys.argv[1])
