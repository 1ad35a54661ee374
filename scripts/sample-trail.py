#!/usr/bin/env python3
"""Writes a synthetic but correctly chained vendorgate decision log covering one day, for trying
`vendorgate audit` commands and the HTML report on something bigger than a demo session.

    python3 scripts/sample-trail.py OUT.jsonl [RECORDS]

The chain format is the proxy's: each line is {"seq":N,"prev_hash":H,...,"hash":X} where X is the
SHA-256 of the line without its ',"hash":"X"' part. `vendorgate audit verify OUT.jsonl` accepts it.
"""
import hashlib, json, random, sys, datetime

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
random.seed(7)
start = datetime.datetime(2026, 11, 21, 0, 0, tzinfo=datetime.timezone.utc)
agents = [("northwind-bpo", f"agent{i}@northwind-bpo", f"203.0.113.{10 + i}") for i in range(6)] + \
         [("contoso-cx", f"analyst{i}@contoso", f"198.51.100.{40 + i}") for i in range(3)]
routes = [("ticket-show", "read", "/api/v2/tickets/{}.json", 1100), ("ticket-update", "write", "/api/v2/tickets/{}.json", 1300),
          ("search", "read", "/api/v2/search.json", 9000), ("incremental-export", "export", "/api/v2/incremental/tickets/cursor.json", 900_000)]
reasons = ["route_denied", "class_not_permitted", "token_expired", "mfa_missing", "export_rate_limited", "egress_cap_exceeded", "ip_not_allowed"]
prev = "0" * 64
with open(out, "w") as f:
    for seq in range(1, n + 1):
        t = start + datetime.timedelta(seconds=86400 * seq / n + random.random())
        vendor, account, ip = random.choice(agents)
        # One contractor account goes rogue in the afternoon: bulk exports until the cap stops it.
        rogue = account == "analyst1@contoso" and 13 <= t.hour < 16
        route, cls, path, size = routes[3] if rogue else random.choice(routes[:3] + routes[:1] * 3)
        denied = (rogue and t.minute % 3 == 0) or random.random() < 0.04
        reason = ("egress_cap_exceeded" if rogue else random.choice(reasons)) if denied else "allowed"
        rec = {"@timestamp": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z",
               "client": {"ip": ip},
               "event": {"action": "http_request", "category": ["web"], "kind": "event", "outcome": "failure" if denied else "success",
                         "reason": reason, "type": ["denied" if denied else "allowed"], "duration": random.randint(2, 90) * 1_000_000},
               "http": {"request": {"id": f"{seq:032x}", "method": "PUT" if cls == "write" else "GET", "bytes": 300 if cls == "write" else 0},
                        "response": {"status_code": 429 if denied and rogue else (403 if denied else 200),
                                     "bytes": 72 if denied else int(size * random.uniform(0.6, 1.4))}, "version": "2"},
               "organization": {"id": vendor}, "user": {"id": account},
               "url": {"original": path.format(random.randint(1, 9999)), "path": path.format(1)},
               "vendorgate": {"schema": "vendorgate.decision/1", "decision": "deny" if denied else "allow", "reason": reason,
                              "rule": "" if not denied else "sample", "route": route, "class": cls, "policy_version": "sha256:sample",
                              "completed": not denied, "cut_off": False}}
        body = json.dumps(rec, separators=(",", ":"))[1:-1]
        unsigned = '{"seq":%d,"prev_hash":"%s",%s}' % (seq, prev, body)
        h = hashlib.sha256(unsigned.encode()).hexdigest()
        f.write(unsigned[:-1] + ',"hash":"%s"}\n' % h)
        prev = h
print(f"{n} records written to {out}")
