#!/usr/bin/env python3
"""Latency loop for the origin API: sequential keep-alive requests, p50/p99 per scenario.

Usage: origin-load.py BASE_URL TOKEN [REQUESTS]
Scenarios: inbox page of 50 (offset 0, offset DEPTH, cursor at depth DEPTH, platform
filter) and messages page of 100 (offset 0, before-cursor) over random conversations.
DEPTH comes from the environment (default 50000; must be below the conversation count).
Latencies are measured by the client (include Python + loopback overhead, ~0.1 ms).
"""
import http.client
import json
import os
import random
import sys
import time
import urllib.parse

base, token = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
depth = int(os.environ.get("DEPTH", "50000"))
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
headers = {"Authorization": f"Bearer {token}"}


def get(path):
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"{path}: HTTP {r.status} {body[:200]!r}")
    return body


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def run(name, paths):
    for p in paths[: max(1, len(paths) // 10)]:
        get(p)  # warm-up
    lat = []
    for p in paths:
        t = time.perf_counter()
        get(p)
        lat.append((time.perf_counter() - t) * 1000)
    print(f"{name:<34} n={len(lat):<6} p50={pct(lat, 50):7.3f} ms  p99={pct(lat, 99):7.3f} ms")


first = json.loads(get("/api/inbox?limit=50"))
conv_ids = [c["id"] for c in first["conversations"]]
deep = json.loads(get(f"/api/inbox?limit=50&offset={depth - 50}"))
deep_cursor = deep["next_cursor"]
# Conversation ids to sample messages from: walk a few pages.
pages = [json.loads(get(f"/api/inbox?limit=200&offset={o}")) for o in range(0, 20000, 2000)]
for p in pages:
    conv_ids += [c["id"] for c in p["conversations"]]
rnd = random.Random(1)
msg_cursors = {}
for cid in rnd.sample(conv_ids, min(200, len(conv_ids))):
    m = json.loads(get(f"/api/conversations/{cid}/messages?limit=10"))
    if m["next_cursor"]:
        msg_cursors[cid] = m["next_cursor"]

run("inbox limit=50 offset=0", ["/api/inbox?limit=50"] * n)
run(f"inbox limit=50 offset={depth}", [f"/api/inbox?limit=50&offset={depth}"] * max(50, n // 10))
run(f"inbox limit=50 cursor@{depth}", [f"/api/inbox?limit=50&cursor={deep_cursor}"] * n)
run("inbox limit=50 platform=telegram", ["/api/inbox?limit=50&platform=telegram"] * n)
run(
    "messages limit=100 offset=0",
    [f"/api/conversations/{rnd.choice(conv_ids)}/messages?limit=100" for _ in range(n)],
)
items = list(msg_cursors.items())
run(
    "messages limit=100 before=cursor",
    [f"/api/conversations/{c}/messages?limit=100&before={k}" for c, k in (rnd.choice(items) for _ in range(n))],
)
