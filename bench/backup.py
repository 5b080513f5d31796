#!/usr/bin/env python3
"""Backups of a data dir with 10,000 documents, one run:

  1. 10,000 Markdown documents (paragraphs of bunko's own docs, English and Japanese, each made
     unique) ingested with `bunko ingest --wait` (embedder off: keyword index only);
  2. `bunko serve` on that data dir; search latency (sequential, 300 queries) as a baseline;
  3. `bunko backup create` while the server keeps answering searches and accepting uploads:
     the backup's time and size, and search latency and upload latency during it;
  4. `bunko backup verify`, and `bunko backup restore` into an empty data dir (which rebuilds
     the search index): their times.

  cargo build --release -p bunko-server
  python3 bench/backup.py            # BENCH_DOCS=10000
Prints one JSON line per measurement.
"""
import json, os, statistics, subprocess, sys, tempfile, threading, time, urllib.request, uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as g  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = str(g.TARGET / "bunko")
DOCS = int(os.environ.get("BENCH_DOCS", "10000"))
ENV = {**os.environ, "BUNKO__LOCAL__EMBEDDER": "none", "BUNKO__LOG__LEVEL": "error",
       "BUNKO__LIMITS__ENABLED": "false"}
QUERIES = ["search index", "backup archive", "OCR pages", "model gateway", "検索", "文書", "metrics",
           "schedule", "citations", "embedding"]


def paragraphs():
    out = []
    for p in sorted((ROOT / "docs").rglob("*.md")):
        for para in p.read_text().split("\n\n"):
            para = para.strip()
            if len(para) > 80 and not para.startswith(("|", "```")):
                out.append(para)
    return out


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))] * 1000, 2)


def search(url, token, q):
    req = urllib.request.Request(url + "/api/v1/search?" + urllib.parse.urlencode({"q": q}),
                                 headers={"authorization": f"Bearer {token}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
    return time.perf_counter() - t


def upload(url, token, n):
    boundary = "bench" + uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"live-{n}.md\"\r\n"
            f"Content-Type: text/markdown\r\n\r\n# Live {n}\n\nUploaded during the backup {uuid.uuid4()}.\r\n"
            f"--{boundary}--\r\n").encode()
    req = urllib.request.Request(url + "/api/v1/projects/bench/documents", data=body, headers={
        "authorization": f"Bearer {token}", "content-type": f"multipart/form-data; boundary={boundary}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
    return time.perf_counter() - t


def main():
    import urllib.parse  # noqa: F401
    tmp = Path(tempfile.mkdtemp(prefix="bunko-bench-backup-"))
    data, files = tmp / "data", tmp / "files"
    files.mkdir()
    paras = paragraphs()
    for i in range(DOCS):
        a, b = paras[i % len(paras)], paras[(i * 7 + 3) % len(paras)]
        (files / f"doc-{i:05d}.md").write_text(f"# Document {i}\n\n{a}\n\n{b}\n\nSerial {i}.\n")
    run = lambda *a: subprocess.run([BIN, "--data-dir", str(data), *a], env=ENV, check=True,
                                    capture_output=True, text=True)
    run("project", "create", "Bench")
    t = time.perf_counter()
    run("ingest", str(files), "--recursive", "--project", "bench", "--wait", "--json")
    print(json.dumps({"step": "ingest", "documents": DOCS, "seconds": round(time.perf_counter() - t, 1)}))

    port = g.free_port()
    srv = subprocess.Popen([BIN, "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"],
                           env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        g.wait_http(url + "/readyz")
        pw = next(l.split(":", 1)[1].strip() for l in (data / "initial-admin-password").read_text().splitlines()
                  if l.startswith("password:"))
        token = g.post(url + "/api/v1/auth/login", {"email": "admin@bunko.local", "password": pw})["access_token"]
        base = [search(url, token, QUERIES[i % len(QUERIES)]) for i in range(300)]
        print(json.dumps({"step": "search, idle", "n": len(base), "p50_ms": pct(base, 0.5),
                          "p99_ms": pct(base, 0.99), "max_ms": pct(base, 1.0)}))
        during, uploads, stop = [], [], threading.Event()

        def load():
            i = 0
            while not stop.is_set():
                during.append(search(url, token, QUERIES[i % len(QUERIES)]))
                if i % 20 == 0:
                    uploads.append(upload(url, token, i))
                i += 1
        th = threading.Thread(target=load)
        th.start()
        time.sleep(1)
        t = time.perf_counter()
        made = json.loads(run("backup", "create", "--json").stdout)
        backup_secs = time.perf_counter() - t
        stop.set()
        th.join()
        print(json.dumps({"step": "backup create (server under load)", "seconds": round(backup_secs, 2),
                          "archive_mib": round(made["bytes"] / 2**20, 1), "files": made["files"]}))
        print(json.dumps({"step": "search during the backup", "n": len(during), "p50_ms": pct(during, 0.5),
                          "p99_ms": pct(during, 0.99), "max_ms": pct(during, 1.0)}))
        print(json.dumps({"step": "upload during the backup", "n": len(uploads), "p50_ms": pct(uploads, 0.5),
                          "max_ms": pct(uploads, 1.0)}))
    finally:
        srv.terminate()
        srv.wait(timeout=60)
    data_mib = sum(f.stat().st_size for f in data.rglob("*") if f.is_file() and "backups" not in f.parts) / 2**20
    t = time.perf_counter()
    run("backup", "verify", made["archive"])
    print(json.dumps({"step": "backup verify", "seconds": round(time.perf_counter() - t, 2),
                      "data_dir_mib_without_backups": round(data_mib, 1)}))
    t = time.perf_counter()
    subprocess.run([BIN, "--data-dir", str(tmp / "restored"), "backup", "restore", made["archive"]],
                   env=ENV, check=True, capture_output=True)
    print(json.dumps({"step": "backup restore (with index rebuild)", "seconds": round(time.perf_counter() - t, 2)}))


if __name__ == "__main__":
    main()
