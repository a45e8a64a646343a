#!/usr/bin/env python3
"""idle-conns.py: what an idle or half-sent keep-alive connection costs in RSS, komora-edge
against nginx proxy_cache (the harness peer), started the same way in the same sitting.

    flock /tmp/komora-bench.lock bench/idle-conns.py [--conns 8000] [--half 8000]
        [--tls 8000] [--peers edge,nginx] [--edge BIN] [--edge-env K=V ...] [--label NAME]
        [--json FILE]

For each peer: start the harness origin (../shared/bench/origin.py) and the proxy, warm one
1 KiB object, then
  idle: open --conns connections, each sending one GET and reading its whole response, and
        leave them open (idle keep-alive); a sample is reused afterwards to show they are;
  half: (a fresh proxy process) open --half connections that send a request head without
        its final CRLF (half-sent; read within the edge's 10 s head deadline);
  with --tls N > 0, over HTTPS (a self-signed P-256 certificate made by openssl, as run-tls
  does; nginx gets run-tls's `listen ssl http2` lines), each in a fresh process:
  tls-idle: N HTTP/1.1-over-TLS connections, each after one full request;
  h2-idle:  N HTTP/2 connections (ALPN h2), each after one full request on stream 1;
  tls-half: N TLS connections whose request head lacks its final CRLF.
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
import ssl
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


TLS_CONTEXTS = {}


def tls_connect(port, alpn):
    ctx = TLS_CONTEXTS.get(alpn)
    if ctx is None:  # one per ALPN: a context loads the system's CA paths (17 ms) when made
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the per-run self-signed certificate
        ctx.set_alpn_protocols([alpn])
        TLS_CONTEXTS[alpn] = ctx
    s = ctx.wrap_socket(connect(port), server_hostname="localhost")
    if s.selected_alpn_protocol() != alpn:
        raise OSError(f"ALPN gave {s.selected_alpn_protocol()!r}, not {alpn}")
    return s


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def h2_get(sock, path, stream):
    """One GET on `stream` of an HTTP/2 connection (HPACK: static-table indexes and literals
    without indexing, so no dynamic table state is needed); returns the :status. Answers the
    server's SETTINGS and PINGs; the body is read to END_STREAM."""
    block = bytes([0x82, 0x87])  # :method GET, :scheme https (static indexes 2 and 7)
    for index, value in ((4, path), (1, "localhost")):  # :path, :authority (names by index)
        v = value.encode()
        block += bytes([index, len(v)]) + v  # literal without indexing, 4-bit name index
    out = h2_frame(1, 0x5, stream, block)  # HEADERS, END_STREAM | END_HEADERS
    if stream == 1:
        out = H2_PREFACE + h2_frame(4, 0, 0) + out  # empty SETTINGS
    sock.sendall(out)
    buf, status, done = b"", None, False
    while not done:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("h2: closed mid-response")
            buf += chunk
        n = int.from_bytes(buf[:3], "big")
        kind, flags, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        payload, buf = buf[9:9 + n], buf[9 + n:]
        if kind == 4 and not flags & 1:  # SETTINGS: acknowledge
            sock.sendall(h2_frame(4, 1, 0))
        elif kind == 6 and not flags & 1:  # PING: answer
            sock.sendall(h2_frame(6, 1, 0, payload))
        elif kind == 7:
            raise OSError("h2: GOAWAY")
        elif sid == stream and kind == 1:
            # the first header field of a response is :status; 0x88 = static index 8 (200)
            status = 200 if payload[:1] == b"\x88" else -1
            done = bool(flags & 1)
        elif sid == stream and kind == 0:
            if n:  # give the window back, so a long run never stalls
                inc = n.to_bytes(4, "big")
                sock.sendall(h2_frame(8, 0, 0, inc) + h2_frame(8, 0, stream, inc))
            done = bool(flags & 1)
        elif sid == stream and kind == 3:
            raise OSError("h2: RST_STREAM")
    return status


def warm(peer, port):
    s = connect(port)
    for _ in range(3):  # miss, then hits
        status = get(s, OBJ)
        if status != 200:
            sys.exit(f"idle-conns: {peer}: {OBJ} answered {status}")
    s.close()


def measure_idle(peer, pid, conns, open_conn, request):
    """RSS per idle keep-alive connection, each after one full request: `open_conn()` opens
    one, `request(sock, again)` makes a request on it and returns the status (`again`: not
    the connection's first)."""
    base = settled_rss(pid)
    idle = []
    for _ in range(conns):
        c = open_conn()
        status = request(c, False)
        if status != 200:
            sys.exit(f"idle-conns: {peer}: {OBJ} answered {status} on a new connection")
        idle.append(c)
    after = settled_rss(pid)
    # the idle connections must still be usable keep-alive connections
    sample = idle[:: max(1, conns // 50)]
    alive = 0
    for c in sample:
        try:
            alive += request(c, True) == 200
        except OSError:
            pass
    for c in idle:
        c.close()
    return {"conns": conns, "rss_base_kib": base, "rss_kib": after,
            "kib_per_conn": round((after - base) / conns, 2), "reused_ok": f"{alive}/{len(sample)}"}


def measure_half(pid, conns, open_conn, host):
    """RSS per connection that sent a request head without its final CRLF (read within the
    edge's 10 s head deadline; each connection is checked to be open still)."""
    base = settled_rss(pid)
    t0 = time.monotonic()
    partial = []
    for _ in range(conns):
        c = open_conn()
        c.sendall(f"GET {OBJ} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: idle-conns\r\n".encode())
        partial.append(c)
    time.sleep(1.0)
    after = rss_kib(pid)
    secs = time.monotonic() - t0
    for c in partial:
        c.close()
    return {"conns": conns, "rss_base_kib": base, "rss_kib": after,
            "kib_per_conn": round((after - base) / conns, 2), "secs": round(secs, 1)}


def make_cert(work):
    key, cert = os.path.join(work, "key.pem"), os.path.join(work, "cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", key, "-out", cert], check=True, capture_output=True)
    os.chmod(key, 0o644)
    return cert, key


def start_origin(work):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HARNESS, "origin.py"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=open(os.path.join(work, "origin.log"), "w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_port(port, proc, "origin")
    return proc, port


def start_peer(peer, args, work, origin_port, kind, tls=None):
    """tls: (cert, key) to add an HTTPS listener; returns (proc, port, https port or None)."""
    port = free_port()
    tls_port = free_port() if tls else None
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
        cmd = [args.edge, "--origin", f"127.0.0.1:{origin_port}", "--cache-dir", cache_dir]
        if tls:  # as bench/edge-bench.sh gives run-tls: a config file with both listeners
            conf = os.path.join(run_dir, "edge.toml")
            with open(conf, "w") as f:
                f.write(f'[server]\nlisten = ["127.0.0.1:{port}"]\ntls_listen = ["127.0.0.1:{tls_port}"]\n'
                        f'tls_cert = "{tls[0]}"\ntls_key = "{tls[1]}"\n')
            cmd += ["--config", conf]
        else:
            cmd += ["--listen", f"127.0.0.1:{port}"]
    else:
        peers = os.path.join(HARNESS, "peers")
        if tls:  # run-tls's nginx: the same template plus its `listen ssl http2` lines
            peers = os.path.join(work, f"peers-{kind}")
            shutil.copytree(os.path.join(HARNESS, "peers"), peers)
            conf = os.path.join(peers, "nginx.conf.in")
            with open(conf) as f:
                text = f.read()
            listen = f"listen 127.0.0.1:@PORT@ backlog=4096;"
            if listen not in text:
                sys.exit("idle-conns: the nginx template has no plain listen line to add TLS to")
            text = text.replace(listen, listen + (
                f"\n        listen 127.0.0.1:{tls_port} ssl http2 backlog=4096;"
                f"\n        ssl_certificate {tls[0]};\n        ssl_certificate_key {tls[1]};"
                "\n        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache shared:SSL:10m;"))
            with open(conf, "w") as f:
                f.write(text)
        cmd = [os.path.join(peers, "start-peer"), "nginx"]
    proc = subprocess.Popen(cmd, env=env, stdout=open(os.path.join(work, f"{peer}-{kind}.log"), "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    wait_port(port, proc, peer)
    if tls_port:
        wait_port(tls_port, proc, f"{peer} (https)")
    return proc, port, tls_port


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
    ap.add_argument("--tls", type=int, default=0, help="connections per TLS phase (0: none)")
    ap.add_argument("--peers", default="edge,nginx")
    ap.add_argument("--edge", default=os.path.join(ROOT, "target", "release", "komora-edge"))
    ap.add_argument("--edge-env", action="append", default=[], metavar="K=V")
    ap.add_argument("--label", default="")
    ap.add_argument("--json")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    most = max(args.conns, args.half, args.tls)
    if hard < most + 64:
        sys.exit(f"idle-conns: open-file hard limit {hard} < {most + 64}")
    work = tempfile.mkdtemp(prefix="idle-conns.")
    os.chmod(work, 0o755)  # nginx workers run as www-data when started as root
    rows = []
    try:
        origin, origin_port = start_origin(work)
        cert = make_cert(work) if args.tls else None
        try:
            for peer in args.peers.split(","):
                row = {"peer": peer, "label": args.label or peer}
                if peer == "edge" and args.edge_env:
                    row["env"] = " ".join(args.edge_env)
                # a fresh process for each kind, so one phase's memory does not hide the other's
                h1 = lambda c, again: get(c, OBJ)
                h2 = lambda c, again: h2_get(c, OBJ, 3 if again else 1)
                # (kind, connections, TLS certificate, measure(port, https port, pid, n))
                phases = (
                    ("idle", args.conns, None, lambda port, tport, pid, n:
                        measure_idle(peer, pid, n, lambda: connect(port), h1)),
                    ("half", args.half, None, lambda port, tport, pid, n:
                        measure_half(pid, n, lambda: connect(port), "127.0.0.1")),
                    ("tls-idle", args.tls, cert, lambda port, tport, pid, n:
                        measure_idle(peer, pid, n, lambda: tls_connect(tport, "http/1.1"), h1)),
                    ("h2-idle", args.tls, cert, lambda port, tport, pid, n:
                        measure_idle(peer, pid, n, lambda: tls_connect(tport, "h2"), h2)),
                    ("tls-half", args.tls, cert, lambda port, tport, pid, n:
                        measure_half(pid, n, lambda: tls_connect(tport, "http/1.1"), "localhost")),
                )
                for kind, n, tls, fn in phases:
                    if n == 0:
                        continue
                    proc, port, tls_port = start_peer(peer, args, work, origin_port, kind, tls)
                    try:
                        warm(peer, port)
                        row[kind] = fn(port, tls_port, proc.pid, n)
                    finally:
                        stop(proc)
                rows.append(row)
                parts = []
                for kind, name in (("idle", "idle"), ("half", "half-sent"), ("tls-idle", "tls-idle"),
                                   ("h2-idle", "h2-idle"), ("tls-half", "tls half-sent")):
                    if kind not in row:
                        continue
                    r = row[kind]
                    extra = f"reused {r['reused_ok']}" if "reused_ok" in r else f"{r['secs']} s"
                    parts.append(f"{name} {r['kib_per_conn']} KiB/conn ({r['conns']} conns, RSS "
                                 f"{r['rss_base_kib']} -> {r['rss_kib']} KiB, {extra})")
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
