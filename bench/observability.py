#!/usr/bin/env python3
"""Observability overhead, one run:

1. The request path with tracing off, sampled at 10 % and at 100 %: `bunko serve` (metrics
   always on) in front of the stand-in upstream (bench-gateway mock), an open-loop load of
   RPS (200) non-streamed chat completions for SECS (30) after a 5 s warm-up, spans exported
   over OTLP/HTTP to a local receiver that reads and drops them. Each call makes two spans (the
   request, the model call). Latency p50/p99 from the scheduled start; the mock alone as the
   floor.
2. `/metrics` with 10,000 series: bench-metrics (render time of the registry).

  cargo build --release -p bunko-server -p bunko-bench --bin bunko --bin bench-gateway --bin bench-metrics
  python3 bench/observability.py          # BENCH_SECS=30 BENCH_RPS=200
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as g  # noqa: E402

SECS = float(os.environ.get("BENCH_SECS", "30"))
RPS = int(os.environ.get("BENCH_RPS", "200"))
# The order the three bunko variants run in (the first run after the mock has measured noisier).
ORDER = os.environ.get("BENCH_ORDER", "off,10,100").split(",")


class Sink(BaseHTTPRequestHandler):
    received = {"requests": 0, "bytes": 0}

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        body = self.rfile.read(n)
        Sink.received["requests"] += 1
        Sink.received["bytes"] += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def main():
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"
    mock, mock_url = g.start_mock()
    rows = []
    try:
        g.load(mock_url, "x", RPS, 3, "json")
        floor = g.load(mock_url, "x", RPS, SECS, "json")
        rows.append({"target": "mock upstream alone", **floor})
        variants = {
            "off": ("bunko, tracing off", ""),
            "10": ("bunko, sampled 10 %", f'\n[otel]\nenabled = true\nendpoint = "{endpoint}"\nsample_ratio = 0.1\n'),
            "100": ("bunko, sampled 100 %", f'\n[otel]\nenabled = true\nendpoint = "{endpoint}"\nsample_ratio = 1.0\n'),
        }
        for key in ORDER:
            name, extra = variants[key]
            with tempfile.TemporaryDirectory() as tmp:
                before = dict(Sink.received)
                p, url, key = g.start_bunko(tmp, mock_url, extra)
                try:
                    g.load(url, key, RPS, 5, "json")
                    r = g.load(url, key, RPS, SECS, "json")
                finally:
                    p.terminate()
                    p.wait(timeout=60)
                r["otlp_exports"] = Sink.received["requests"] - before["requests"]
                r["otlp_bytes"] = Sink.received["bytes"] - before["bytes"]
                rows.append({"target": name, **r})
    finally:
        mock.terminate()
    for r in rows:
        print(json.dumps(r))
    m = subprocess.run([str(g.TARGET / "bench-metrics"), "10000"], capture_output=True,
                       text=True, check=True)
    print(m.stdout.strip())


if __name__ == "__main__":
    main()
