#!/usr/bin/env python3
"""Gateway overhead: bunko vs the LiteLLM proxy in front of the same mock upstream, one run.

Three targets answer the same OpenAI chat-completions request:
  mock     the stand-in upstream itself (bench-gateway mock: JSON, or SSE with 8 chunks + usage)
  bunko    `bunko serve` with one alias to the mock (auth by API key, quotas, metrics, ledger)
  litellm  `litellm --config` (the proxy, one worker) with one model to the mock
For each rate (100, 500, 1000 requests/s) and each mode (JSON, stream) an open-loop load
(bench-gateway load: requests start on schedule, latency from the scheduled start) runs for
SECS against each target in turn. Added latency = target percentile - mock percentile.
Then the usage ledger grown to LEDGER_ROWS (10M) rows, and bunko at the highest rate again:
its p99 beside the empty-ledger figure. Then 256 concurrent streams through bunko (the mock
sends a chunk every 50 ms): a WARMUP_SECS (60) warm-up, then STREAM_SECS measured: stalled
streams and bunko's RSS sampled through the window.

  python3 -m venv ~/.cache/bunko-bench/litellm-venv
  ~/.cache/bunko-bench/litellm-venv/bin/pip install 'litellm[proxy]'
  cargo build --release -p bunko-server -p bunko-bench --bin bunko --bin bench-gateway
  python3 bench/gateway.py          # BENCH_SECS=60 BENCH_STREAM_SECS=300 BENCH_RATES=100,500,1000
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
SECS = float(os.environ.get("BENCH_SECS", "60"))
STREAM_SECS = float(os.environ.get("BENCH_STREAM_SECS", "300"))
RATES = [int(r) for r in os.environ.get("BENCH_RATES", "100,500,1000").split(",")]
LITELLM = Path(os.environ.get("LITELLM", Path.home() / ".cache/bunko-bench/litellm-venv/bin/litellm"))
ONLY = os.environ.get("BENCH_ONLY", "")  # "overhead", "ledger" or "streams"
LEDGER_ROWS = int(os.environ.get("BENCH_LEDGER_ROWS", "10000000"))
WARMUP_SECS = float(os.environ.get("BENCH_WARMUP_SECS", "60"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not come up")


def post(url, body, token=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def rss_mib(pid):
    total = 0
    # The process and its children (LiteLLM runs uvicorn workers).
    pids = [pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                    text=True).stdout.split()]
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return round(total / 1024, 1)


def start_mock(delay_ms=0):
    port = free_port()
    p = subprocess.Popen([str(TARGET / "bench-gateway"), "mock", f"127.0.0.1:{port}", str(delay_ms)])
    time.sleep(0.5)
    return p, f"http://127.0.0.1:{port}"


def start_bunko(tmp, mock_url, extra=""):
    """`bunko serve` on a data dir under `tmp` (kept between starts), with an API key;
    `extra` is appended to its configuration."""
    port = free_port()
    data = Path(tmp) / "bunko-data"
    cfg = Path(tmp) / "bunko.toml"
    cfg.write_text(f"""
[log]
level = "warn"

[local]
embedder = "none"
generator = "none"

[limits.classes.default]
per_second = 1000000.0
burst = 1000000

[limits.classes.gateway]
per_second = 1000000.0
burst = 1000000

[[providers]]
name = "mock"
type = "openai"
base_url = "{mock_url}/v1"
max_concurrent = 100000
retries = 0

[[models]]
alias = "fast"
provider = "mock"
model = "gpt-4o-mini"
input_price_per_mtok = 0.15
output_price_per_mtok = 0.60
""" + extra)
    p = subprocess.Popen([str(TARGET / "bunko"), "serve", "--config", str(cfg), "--listen",
                          f"127.0.0.1:{port}", "--data-dir", str(data)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "BUNKO__LOG__FORMAT": "json"})
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz")
    for _ in range(50):
        if (data / "initial-admin-password").exists():
            break
        time.sleep(0.1)
    pw = next(line.split(":", 1)[1].strip()
              for line in (data / "initial-admin-password").read_text().splitlines()
              if line.startswith("password:"))
    tok = post(url + "/api/v1/auth/login", {"email": "admin@bunko.local", "password": pw})["access_token"]
    key = post(url + "/api/v1/keys", {"name": "bench", "scopes": ["gateway"]}, tok)["secret"]
    return p, url, key


# LiteLLM refuses to start without a master key (auth on, as bunko's API key is).
LITELLM_KEY = "sk-" + "5b1c" * 16


def start_litellm(tmp, mock_url):
    port = free_port()
    cfg = Path(tmp) / "litellm.yaml"
    cfg.write_text(f"""
model_list:
  - model_name: fast
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {mock_url}/v1
      api_key: sk-bench
litellm_settings:
  telemetry: false
general_settings:
  master_key: {LITELLM_KEY}
""")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "NO_DOCS": "True"}
    p = subprocess.Popen([str(LITELLM), "--config", str(cfg), "--port", str(port),
                          "--host", "127.0.0.1", "--num_workers", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health/liveliness", timeout=180)
    return p, url


def overhead_histogram(url):
    """bunko's own measure of the time it spends on a call, excluding the upstream
    (`bunko_gateway_overhead_seconds`, every call of the run): the bucket bounds under which
    50 %, 99 % and 99.9 % of calls fall."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    buckets = []
    for line in text.splitlines():
        if line.startswith("bunko_gateway_overhead_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    total = buckets[-1][1] if buckets else 0
    out = {"calls": int(total)}
    for q in (0.5, 0.99, 0.999):
        bound = next((le for le, c in buckets if total and c >= q * total), None)
        out[f"p{q * 100:g}_le_ms"] = bound * 1000 if bound not in (None, float("inf")) else None
    return out


def load(url, token, rps, secs, mode):
    out = subprocess.run([str(TARGET / "bench-gateway"), "load", url, token, "fast", str(rps),
                          str(secs), mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def overhead(tmp):
    mock, mock_url = start_mock()
    bunko, bunko_url, key = start_bunko(tmp, mock_url)
    targets = [("mock", mock_url, "x"), ("bunko", bunko_url, key)]
    litellm = None
    if LITELLM.exists():
        litellm, litellm_url = start_litellm(tmp, mock_url)
        targets.append(("litellm", litellm_url, LITELLM_KEY))
    else:
        print(f"LiteLLM not installed at {LITELLM}: measuring bunko alone", file=sys.stderr)
    # Warm-up: connections, caches, JIT-free but page-faulted.
    for _, url, tok in targets:
        load(url, tok, 100, 3, "json")
        load(url, tok, 100, 3, "stream")
    rows = []
    for rps in RATES:
        for mode in ("json", "stream"):
            row = {"rps": rps, "mode": mode}
            for name, url, tok in targets:
                r = load(url, tok, rps, SECS, mode)
                row[name] = r
                print(json.dumps({"rps": rps, "mode": mode, "target": name, **r}), flush=True)
            for name in ("bunko", "litellm"):
                if name in row:
                    row[f"{name}_added_p50_ms"] = row[name]["p50_ms"] - row["mock"]["p50_ms"]
                    row[f"{name}_added_p99_ms"] = row[name]["p99_ms"] - row["mock"]["p99_ms"]
            rows.append(row)
    rss = {"bunko_rss_mib": rss_mib(bunko.pid), "bunko_overhead": overhead_histogram(bunko_url)}
    if litellm:
        rss["litellm_rss_mib"] = rss_mib(litellm.pid)
    for p in (bunko, litellm, mock):
        if p:
            p.terminate()
            p.wait()
    return rows, rss


def fill_ledger(db, rows):
    """Appends `rows` usage records spread over the last 90 days, the way the gateway writes
    them (the same columns and indexes), in one transaction per million."""
    import random
    import sqlite3
    con = sqlite3.connect(db)
    now = int(time.time() * 1000)
    users = [f"0190aaaa-0000-7000-8000-{i:012d}" for i in range(200)]
    models = ["fast", "local", "smart", "embed"]
    done = 0
    while done < rows:
        n = min(1_000_000, rows - done)
        con.executemany(
            "INSERT INTO usage_ledger (at, user_id, key_id, project_id, api, model, provider, "
            "input_tokens, output_tokens, estimated, cost_usd, duration_ms, ttft_ms, outcome) "
            "VALUES (?, ?, NULL, NULL, 'openai', ?, 'mock', ?, ?, 0, ?, ?, ?, 'ok')",
            ((now - random.randrange(90 * 86_400_000), random.choice(users),
              random.choice(models), random.randrange(10, 2000), random.randrange(1, 500),
              random.random() / 1000, random.random() * 900, random.random() * 200)
             for _ in range(n)))
        con.commit()
        done += n
    count = con.execute("SELECT count(*) FROM usage_ledger").fetchone()[0]
    con.close()
    return count


def ledger(tmp):
    """The highest rate, JSON, with an empty ledger and then with LEDGER_ROWS rows."""
    rps = max(RATES)
    mock, mock_url = start_mock()
    out = {}
    for phase in ("empty", "full"):
        if phase == "full":
            t = time.time()
            out["ledger_rows"] = fill_ledger(Path(tmp) / "bunko-data" / "bunko.db", LEDGER_ROWS)
            out["fill_s"] = round(time.time() - t, 1)
        bunko, url, key = start_bunko(tmp, mock_url)
        load(url, key, 100, 3, "json")
        r = load(url, key, rps, SECS, "json")
        out[phase] = r
        print(json.dumps({"ledger": phase, "rps": rps, **r}), flush=True)
        bunko.terminate()
        bunko.wait()
    mock.terminate()
    mock.wait()
    return out


def streams(tmp):
    mock, mock_url = start_mock(50)
    bunko, bunko_url, key = start_bunko(tmp, mock_url)
    # Warm-up: 256 clients streaming for a minute (connections, allocator arenas, SQLite's
    # page cache and the ledger's first batches reach their working size).
    subprocess.run([str(TARGET / "bench-gateway"), "streams", bunko_url, key, "fast", "256",
                    str(WARMUP_SECS)], capture_output=True, check=True)
    rss_start = rss_mib(bunko.pid)
    samples = []
    p = subprocess.Popen([str(TARGET / "bench-gateway"), "streams", bunko_url, key, "fast", "256",
                          str(STREAM_SECS)], stdout=subprocess.PIPE, text=True)
    while p.poll() is None:
        time.sleep(min(10, STREAM_SECS / 10))
        samples.append(rss_mib(bunko.pid))
    out = json.loads(p.stdout.read().strip().splitlines()[-1])
    rss_end = rss_mib(bunko.pid)
    bunko.terminate()
    bunko.wait()
    mock.terminate()
    mock.wait()
    return {**out, "secs": STREAM_SECS, "warmup_secs": WARMUP_SECS, "rss_samples_mib": samples,
            "rss_start_mib": rss_start, "rss_end_mib": rss_end,
            "rss_max_mib": max(samples + [rss_end]),
            "rss_growth_pct": round(100 * (rss_end - rss_start) / rss_start, 1)}


def main():
    tmp = tempfile.mkdtemp(prefix="bunko-bench-gateway-")
    result = {"secs": SECS}
    try:
        if ONLY in ("", "overhead"):
            result["overhead"], result["rss"] = overhead(tmp)
        if ONLY in ("", "ledger"):
            result["ledger"] = ledger(tempfile.mkdtemp(prefix="bunko-bench-ledger-"))
        if ONLY in ("", "streams"):
            result["streams"] = streams(tempfile.mkdtemp(prefix="bunko-bench-streams-"))
            print(json.dumps(result["streams"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(os.environ.get("BENCH_OUT", "/tmp/bunko-bench-gateway.json"))
    out.write_text(json.dumps(result, indent=1))
    print("\n| rps | mode | mock p50 / p99 ms | bunko added p50 / p99 ms | LiteLLM added p50 / p99 ms | LiteLLM errors |")
    print("|---|---|---|---|---|---|")
    for r in result.get("overhead", []):
        lite = (f"{r['litellm_added_p50_ms']:.2f} / {r['litellm_added_p99_ms']:.2f}"
                if "litellm" in r else "—")
        errs = sum(r["litellm"]["errors"].values()) if "litellm" in r else "—"
        print(f"| {r['rps']} | {r['mode']} | {r['mock']['p50_ms']:.2f} / {r['mock']['p99_ms']:.2f} | "
              f"{r['bunko_added_p50_ms']:.3f} / {r['bunko_added_p99_ms']:.3f} | {lite} | {errs} |")
    print(json.dumps(result.get("rss", {})))
    print(f"full result: {out}")


if __name__ == "__main__":
    main()
