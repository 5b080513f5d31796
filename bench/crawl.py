#!/usr/bin/env python3
"""Crawl-and-ingest throughput from a local stand-in of the arXiv API, one run:

  1. a stand-in (Python http.server, threaded) serves the arXiv Atom API in the format of
     ../shared/fixtures/crawl/arxiv_api (its first entry as the template, BENCH_ITEMS unique
     papers, paged by start/max_results) and /pdf/ID: the shared English papers, each copy made
     unique by a trailing PDF comment so no two items are the same bytes;
  2. `bunko serve` (embedder off: the keyword half only, so the figures are crawling,
     extraction and indexing, not embedding), a source per run, `POST /api/v1/sources/NAME/crawl`;
  3. the crawl job's time (listing, fetching, storing: items/min) and the time until every
     document is ready (crawl + processing: items/min end to end);
  4. run A: abstracts only (`fetch_files = false`, BENCH_ITEMS=1000); run B: PDFs
     (BENCH_PDF_ITEMS=60). A second crawl of A shows the cost of an unchanged listing.

  cargo build --release -p bunko-server
  python3 bench/crawl.py
Prints one JSON line per measurement.
"""
import http.server, json, os, re, subprocess, sys, tempfile, threading, time, urllib.parse, urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as g  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
BIN = str(g.TARGET / "bunko")
ITEMS = int(os.environ.get("BENCH_ITEMS", "1000"))
PDF_ITEMS = int(os.environ.get("BENCH_PDF_ITEMS", "60"))
ENV = {**os.environ, "BUNKO__LOCAL__EMBEDDER": "none", "BUNKO__LOG__LEVEL": "error",
       "BUNKO__LIMITS__ENABLED": "false"}


def feed_parts():
    atom = (SHARED / "fixtures/crawl/arxiv_api/query_all_science_2019.atom.xml").read_text()
    head = atom[:atom.index("<entry>")]
    entry = atom[atom.index("<entry>"):atom.index("</entry>") + len("</entry>")]
    return head, entry


def paragraphs():
    out = []
    for p in sorted((ROOT / "docs").rglob("*.md")):
        for para in p.read_text().split("\n\n"):
            para = para.strip()
            if len(para) > 120 and not para.startswith(("|", "```", "#")):
                out.append(para.replace("&", "and").replace("<", "(").replace(">", ")"))
    return out


class Stand(http.server.ThreadingHTTPServer):
    daemon_threads = True


def make_handler(base, head, template, paras, total, pdfs):
    def entry(i):
        aid = f"2401.{i:05d}v1"
        e = template.replace("1501.05039v1", aid).replace("http://arxiv.org/", base + "/")
        e = re.sub(r"<title>.*?</title>", f"<title>Paper {i}: {paras[i % len(paras)][:60]}</title>", e, flags=re.S)
        e = re.sub(r"<summary>.*?</summary>",
                   f"<summary>{paras[i % len(paras)]} {paras[(i * 7 + 3) % len(paras)]} (item {i})</summary>",
                   e, flags=re.S)
        return e

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            u = urllib.parse.urlparse(self.path)
            if u.path == "/api/query":
                q = urllib.parse.parse_qs(u.query)
                start, n = int(q.get("start", ["0"])[0]), int(q.get("max_results", ["10"])[0])
                body = head.replace(">120839<", f">{total}<") + "".join(
                    entry(i) for i in range(start, min(total, start + n))) + "</feed>"
                data, ctype = body.encode(), "application/atom+xml"
            elif u.path.startswith("/pdf/"):
                i = int(re.findall(r"\d+", u.path)[-2])
                data = pdfs[i % len(pdfs)] + f"\n% bunko bench item {i}\n".encode()
                ctype = "application/pdf"
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
    return H


def get(url, token):
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def crawl(url, token, name, project, n):
    t = time.perf_counter()
    job = g.post(url + f"/api/v1/sources/{name}/crawl", {}, token)["job_id"]
    while True:
        j = get(url + f"/api/v1/jobs/{job}", token)
        if j["state"] in ("succeeded", "dead"):
            break
        time.sleep(0.05)
    crawl_s = time.perf_counter() - t
    if j["state"] != "succeeded":
        raise SystemExit(f"crawl failed: {j}")
    if j["result"]["added"] == 0:
        return crawl_s, crawl_s, j["result"]
    while True:
        docs = get(url + f"/api/v1/projects/{project}/documents?limit=200&status=ready", token)
        ready = len(docs["items"])
        page = docs
        while page.get("next_cursor"):
            page = get(url + f"/api/v1/projects/{project}/documents?limit=200&status=ready&cursor={page['next_cursor']}", token)
            ready += len(page["items"])
        if ready >= n:
            break
        time.sleep(0.2)
    return crawl_s, time.perf_counter() - t, j["result"]


def main():
    if not SHARED.is_dir():
        raise SystemExit("../shared is needed (the arXiv fixture and the PDFs)")
    head, template = feed_parts()
    paras = paragraphs()
    pdfs = [p.read_bytes() for p in sorted((SHARED / "fixtures/pdfs/papers_en").glob("*.pdf"))]
    port = g.free_port()
    base = f"http://127.0.0.1:{port}"
    stand = Stand(("127.0.0.1", port), make_handler(base, head, template, paras, max(ITEMS, PDF_ITEMS), pdfs))
    threading.Thread(target=stand.serve_forever, daemon=True).start()

    tmp = Path(tempfile.mkdtemp(prefix="bunko-bench-crawl-"))
    data = tmp / "data"
    cfg = tmp / "bunko.toml"
    cfg.write_text('[crawl]\nallow_hosts = ["127.0.0.1"]\nallow_private_networks = true\n')
    bport = g.free_port()
    srv = subprocess.Popen([BIN, "--config", str(cfg), "serve", "--data-dir", str(data),
                            "--listen", f"127.0.0.1:{bport}"], env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{bport}"
    try:
        g.wait_http(url + "/readyz")
        pw = next(l.split(":", 1)[1].strip() for l in (data / "initial-admin-password").read_text().splitlines()
                  if l.startswith("password:"))
        token = g.post(url + "/api/v1/auth/login", {"email": "admin@bunko.local", "password": pw})["access_token"]
        for name, n, files in (("abstracts", ITEMS, False), ("pdfs", PDF_ITEMS, True)):
            g.post(url + "/api/v1/projects", {"name": name}, token)
            # The stand-in lists max(ITEMS, PDF_ITEMS) papers; max_items takes the first n.
            g.post(url + "/api/v1/sources", {
                "name": name, "kind": "arxiv", "project": name, "url": base + "/api/query",
                "query": "all:bench", "page_size": 100, "max_items": n, "delay_ms": 0,
                "fetch_files": files}, token)
            crawl_s, total_s, stats = crawl(url, token, name, name, n)
            print(json.dumps({"run": name, "items": stats["added"], "requests": stats["requests"],
                              "crawl_seconds": round(crawl_s, 2),
                              "crawl_items_per_min": round(stats["added"] / crawl_s * 60),
                              "crawl_and_ingest_seconds": round(total_s, 2),
                              "crawl_and_ingest_items_per_min": round(stats["added"] / total_s * 60)}))
        # Nothing new: the listing is read and every item skipped by its hash.
        t = time.perf_counter()
        job = g.post(url + "/api/v1/sources/abstracts/crawl", {}, token)["job_id"]
        while get(url + f"/api/v1/jobs/{job}", token)["state"] not in ("succeeded", "dead"):
            time.sleep(0.05)
        j = get(url + f"/api/v1/jobs/{job}", token)
        print(json.dumps({"run": "abstracts, unchanged listing", "seen": j["result"]["seen"],
                          "unchanged": j["result"]["unchanged"], "added": j["result"]["added"],
                          "seconds": round(time.perf_counter() - t, 2)}))
    finally:
        srv.terminate()
        srv.wait(timeout=60)
        stand.shutdown()


if __name__ == "__main__":
    main()
