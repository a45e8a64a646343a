#!/usr/bin/env python3
"""idle-conns.py: what an idle or half-sent keep-alive connection costs in RSS, komora-edge
against nginx proxy_cache (the harness peer), started the same way in the same sitting.

    flock /tmp/komora-bench.lock bench/idle-conns.py [--conns 8000] [--half 8000]
        [--peers edge,nginx] [--edge BIN] [--edge-env K=V ...] [--label NAME] [--json FILE]

For each peer: start the harness origin (../shared/bench/origin.py) and the proxy, warm one
1 KiB object, then
  idle: open --conns connections, each sending one GET and reading its whole response, and
        leave them open (idle keep-alive); a sample is reused afterwards to show they are;
  half: (a fresh proxy process) open --half connections that send a request head without
        its final CRLF (half-sent; read within the edge's 10 s head deadline).
RSS (VmRSS from /proc, summed over the proxy's processes: nginx = master + workers) is read
before (settled) and after each phase; the report is the delta per connection.
The soft open-file limit is raised to the hard one (needs > max(conns, half)).
"""
import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.environ.get("KOMORA_BENCH_HARNESS") or next(
    (d for d in (os.path.join(ROOT, "..", "shared", "bench"), "/work/shared/bench")
     if os.path.exists(os.path.join(d, "origin.py"))),
    "/work/shared/bench",
)
OBJ = "/media/img-1k.jpg"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit(f"idle-conns: {what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"idle-conns: nothing on port {port} ({what})")


def tree(pid):
    """pid and its descendants (nginx: master and workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def rss_kib(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def settled_rss(pid):
    """RSS once two reads 0.5 s apart agree within 1 %."""
    last = rss_kib(pid)
    for _ in range(20):
        time.sleep(0.5)
        now = rss_kib(pid)
        if abs(now - last) <= max(last // 100, 64):
            return now
        last = now
    return last


def get(sock, path):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("closed before the response head")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("closed mid-body")
        body += chunk
    return status


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def warm(peer, port):
    s = connect(port)
    for _ in range(3):  # miss, then hits
        status = get(s, OBJ)
        if status != 200:
            sys.exit(f"idle-conns: {peer}: {OBJ} answered {status}")
    s.close()


def measure_idle(peer, port, pid, conns):
    """RSS per idle keep-alive connection, each after one full request."""
    warm(peer, port)
    base = settled_rss(pid)
    idle = []
    for _ in range(conns):
        c = connect(port)
        if get(c, OBJ) != 200:
            sys.exit(f"idle-conns: {peer}: {OBJ} not 200 on an idle connection")
        idle.append(c)
    after = settled_rss(pid)
    # the idle connections must still be usable keep-alive connections
    sample = idle[:: max(1, conns // 50)]
    alive = 0
    for c in sample:
        try:
            alive += get(c, OBJ) == 200
        except OSError:
            pass
    for c in idle:
        c.close()
    return {"conns": conns, "rss_base_kib": base, "rss_kib": after,
            "kib_per_conn": round((after - base) / conns, 2), "reused_ok": f"{alive}/{len(sample)}"}


def measure_half(peer, port, pid, conns):
    """RSS per connection that sent a request head without its final CRLF (read within the
    edge's 10 s head deadline; each connection is checked to be open still)."""
    warm(peer, port)
    base = settled_rss(pid)
    t0 = time.monotonic()
    partial = []
    for _ in range(conns):
        c = connect(port)
        c.sendall(f"GET {OBJ} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: idle-conns\r\n".encode())
        partial.append(c)
    time.sleep(1.0)
    after = rss_kib(pid)
    secs = time.monotonic() - t0
    for c in partial:
        c.close()
    return {"conns": conns, "rss_base_kib": base, "rss_kib": after,
            "kib_per_conn": round((after - base) / conns, 2), "secs": round(secs, 1)}


def start_origin(work):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HARNESS, "origin.py"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=open(os.path.join(work, "origin.log"), "w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_port(port, proc, "origin")
    return proc, port


def start_peer(peer, args, work, origin_port, kind):
    port = free_port()
    run_dir = os.path.join(work, f"{peer}-{kind}-run")
    cache_dir = os.path.join(work, f"{peer}-{kind}-cache")
    os.makedirs(run_dir)
    os.makedirs(cache_dir)
    env = dict(os.environ, PORT=str(port), ORIGIN=f"127.0.0.1:{origin_port}", RUN_DIR=run_dir,
               CACHE_DIR=cache_dir, RUST_LOG="error")
    if peer == "edge":
        for kv in args.edge_env:
            k, _, v = kv.partition("=")
            env[k] = v
        cmd = [args.edge, "--listen", f"127.0.0.1:{port}", "--origin", f"127.0.0.1:{origin_port}",
               "--cache-dir", cache_dir]
    else:
        cmd = [os.path.join(HARNESS, "peers", "start-peer"), "nginx"]
    proc = subprocess.Popen(cmd, env=env, stdout=open(os.path.join(work, f"{peer}-{kind}.log"), "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    wait_port(port, proc, peer)
    return proc, port


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=8000)
    ap.add_argument("--half", type=int, default=8000)
    ap.add_argument("--peers", default="edge,nginx")
    ap.add_argument("--edge", default=os.path.join(ROOT, "target", "release", "komora-edge"))
    ap.add_argument("--edge-env", action="append", default=[], metavar="K=V")
    ap.add_argument("--label", default="")
    ap.add_argument("--json")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < max(args.conns, args.half) + 64:
        sys.exit(f"idle-conns: open-file hard limit {hard} < {max(args.conns, args.half) + 64}")
    work = tempfile.mkdtemp(prefix="idle-conns.")
    os.chmod(work, 0o755)  # nginx workers run as www-data when started as root
    rows = []
    try:
        origin, origin_port = start_origin(work)
        try:
            for peer in args.peers.split(","):
                row = {"peer": peer, "label": args.label or peer}
                if peer == "edge" and args.edge_env:
                    row["env"] = " ".join(args.edge_env)
                # a fresh process for each kind, so one phase's memory does not hide the other's
                for kind, fn, n in (("idle", measure_idle, args.conns), ("half", measure_half, args.half)):
                    if n == 0:
                        continue
                    proc, port = start_peer(peer, args, work, origin_port, kind)
                    try:
                        row[kind] = fn(peer, port, proc.pid, n)
                    finally:
                        stop(proc)
                rows.append(row)
                parts = []
                if "idle" in row:
                    r = row["idle"]
                    parts.append(f"idle {r['kib_per_conn']} KiB/conn ({r['conns']} conns, RSS "
                                 f"{r['rss_base_kib']} -> {r['rss_kib']} KiB, reused {r['reused_ok']})")
                if "half" in row:
                    r = row["half"]
                    parts.append(f"half-sent {r['kib_per_conn']} KiB/conn ({r['conns']} conns, RSS "
                                 f"{r['rss_base_kib']} -> {r['rss_kib']} KiB, {r['secs']} s)")
                print(f"{row['label']:>12}: " + "; ".join(parts), flush=True)
        finally:
            stop(origin)
    finally:
        if os.environ.get("IDLE_CONNS_KEEP"):
            print(f"idle-conns: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
