"""Walks a Zendesk account through vendorgate with zenpy, unchanged but for its base URL and token.

Run by the end-to-end tests (tests/e2e/clients.rs) with VG_PORT (the proxy's port) and VG_TOKEN
(the agent's bearer token) set (and VG_FIELDS, ticket fields whose values to report), and REQUESTS_CA_BUNDLE trusting the proxy's dev CA. zenpy builds
its base URL as https://{subdomain}.{domain}; the proxy is "zendesk-gw.localhost:{port}", which
this harness resolves to loopback as DNS would. Prints what it read, as JSON.
"""

import json
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".pydeps"))

_resolve = socket.getaddrinfo


def _loopback(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _resolve(host, *args, **kwargs)


socket.getaddrinfo = _loopback

from zenpy import Zenpy  # noqa: E402  (after the resolver is in place)

zenpy = Zenpy(
    subdomain="zendesk-gw",
    domain="localhost:" + os.environ["VG_PORT"],
    oauth_token=os.environ["VG_TOKEN"],
    disable_cache=True,
)
# VG_FIELDS="description,recipient": also report every value those ticket fields took (redaction).
fields = [f for f in os.environ.get("VG_FIELDS", "").split(",") if f]
seen = {f: set() for f in fields}
# VG_GROUPS=1: also report the group_id of every ticket each walk received (record scoping).
groups = {"tickets": set(), "search": set(), "incremental": set()}


def counted(kind, records):
    n = 0
    for record in records:
        n += 1
        groups[kind].add(getattr(record, "group_id", None))
        if kind == "tickets":
            for f in fields:
                seen[f].add(getattr(record, f, None))
    return n


read = {
    "tickets": counted("tickets", zenpy.tickets()),
    # VG_TICKET: the ticket whose comments are read (default 42).
    "comments": sum(1 for _ in zenpy.tickets.comments(ticket=int(os.environ.get("VG_TICKET", "42")))),
    "search": counted("search", zenpy.search("status:open", type="ticket")),
    "incremental": counted(
        "incremental", zenpy.tickets.incremental(start_time=1_700_000_000)
    ),
    "attachment_bytes": len(zenpy.attachments.download(7).getvalue()),
}
if fields:
    read["fields"] = {f: sorted(seen[f], key=str) for f in fields}
if os.environ.get("VG_GROUPS"):
    read["groups"] = {k: sorted(v, key=str) for k, v in groups.items()}
print(json.dumps(read))
