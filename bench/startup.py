#!/usr/bin/env python3
"""Time from `bunko serve` start to the first 200 from /readyz, and idle RSS.

Usage: python3 bench/startup.py [RUNS] [BINARY]   (default 10 runs, target/release/bunko)
Each run uses a fresh data dir (first start: creates the database and runs migrations) and
then restarts on the same dir (warm start). RSS is read from /proc after 2 s idle.
"""
import http.client, os, socket, statistics, subprocess, sys, tempfile, time

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
binary = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "target", "release", "bunko")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def ready(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        c.request("GET", "/readyz"); r = c.getresponse(); r.read(); return r.status == 200
    except OSError:
        return False


def one(data_dir):
    port = free_port()
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "BUNKO__LOG__FORMAT": "json"})
    while not ready(port):
        if time.perf_counter() - t0 > 10: p.kill(); raise SystemExit("not ready in 10 s")
        time.sleep(0.002)
    ms = (time.perf_counter() - t0) * 1000
    time.sleep(2)
    rss = 0
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"): rss = int(line.split()[1]) / 1024
    p.terminate(); p.wait(10)
    return ms, rss


cold, warm, rss = [], [], []
for _ in range(runs):
    with tempfile.TemporaryDirectory() as d:
        ms, r = one(os.path.join(d, "data")); cold.append(ms); rss.append(r)
        ms, r = one(os.path.join(d, "data")); warm.append(ms); rss.append(r)
q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
print(f"| measure | median | p90 | max |\n|---|---|---|---|")
print(f"| start → /readyz 200, new data dir (ms) | {statistics.median(cold):.1f} | {q(cold, .9):.1f} | {max(cold):.1f} |")
print(f"| start → /readyz 200, existing data dir (ms) | {statistics.median(warm):.1f} | {q(warm, .9):.1f} | {max(warm):.1f} |")
print(f"| idle RSS after 2 s (MiB) | {statistics.median(rss):.1f} | {q(rss, .9):.1f} | {max(rss):.1f} |")
