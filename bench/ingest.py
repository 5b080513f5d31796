#!/usr/bin/env python3
"""Ingestion end to end with the release binary (`bunko ingest --wait`), one run each:

  1. peak RSS while ingesting one ~50 MB PDF made by concatenating fixture papers (pdfunite),
     for bunko itself and for the largest child tool (getrusage of the process tree);
  2. documents/min for every PDF under ../shared/fixtures/pdfs with 1 and 2 documents
     processed at once (ingest queue concurrency), embedder on (multilingual-e5-small) and
     off.

Usage: python3 bench/ingest.py [SHARED_DIR] [BINARY] [EMBEDDERS, default none,multilingual-e5-small]
Prints one JSON line per measurement.
"""
import json, os, resource, shutil, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "shared")
binary = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "target", "release", "bunko")
pdfs = os.path.join(shared, "fixtures", "pdfs")


# The Japanese dictionary is built from Debian's mecab-ipadic once per cache dir (seconds, and
# ~240 MB of peak memory); every run shares one cache, built by a first ingest that is reported
# on its own line, so the runs measure ingestion rather than that one-time build.
DICT_CACHE = tempfile.mkdtemp(prefix="bunko-bench-dict-")


def run(args, env, data_dir):
    e = {**os.environ, **env, "BUNKO__LOG__LEVEL": "error", "BUNKO__SEARCH__DICTIONARY_CACHE": DICT_CACHE}
    subprocess.run([binary, "--data-dir", data_dir, "project", "create", "Bench"], check=True,
                   env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.Popen([binary, "--data-dir", data_dir, "ingest", *args, "--project", "bench", "--wait", "--json"],
                         env=e, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    out = p.stdout.read()
    secs = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows = [json.loads(l) for l in out.splitlines() if l.strip()]
    return secs, peak / 1024, after.ru_maxrss / 1024, rows


def main():
    tmp = tempfile.mkdtemp(prefix="bunko-bench-ingest-")
    try:
        # 1. A ~50 MB PDF.
        papers = sorted(os.path.join(pdfs, "papers_en", f) for f in os.listdir(os.path.join(pdfs, "papers_en")))
        big = os.path.join(tmp, "big.pdf")
        parts = []
        size = sum(os.path.getsize(p) for p in papers)
        reps = max(1, int(50e6 // size) + 1)
        for _ in range(reps):
            parts.extend(papers)
        subprocess.run(["pdfunite", *parts, big], check=True)
        mb = os.path.getsize(big) / 1e6
        pages = int(next(l.split()[1] for l in subprocess.run(["pdfinfo", big], capture_output=True, text=True).stdout.splitlines() if l.startswith("Pages:")))
        first = os.path.join(pdfs, "papers_en", sorted(os.listdir(os.path.join(pdfs, "papers_en")))[0])
        secs, peak, _, rows = run([first], {"BUNKO__LOCAL__EMBEDDER": "none"}, os.path.join(tmp, "d0"))
        print(json.dumps({"bench": "first_ingest_builds_the_japanese_dictionary", "status": rows[0]["status"],
                          "seconds": round(secs, 1), "bunko_peak_rss_mib": round(peak, 1)}), flush=True)
        secs, peak, children_peak, rows = run([big], {"BUNKO__LOCAL__EMBEDDER": "none"}, os.path.join(tmp, "d1"))
        print(json.dumps({"bench": "big_pdf", "mb": round(mb, 1), "pages": pages, "status": rows[0]["status"],
                          "seconds": round(secs, 1), "pages_per_s": round(pages / secs, 1),
                          "bunko_peak_rss_mib": round(peak, 1), "largest_process_peak_rss_mib": round(children_peak, 1),
                          "embedder": "none"}), flush=True)
        # 2. The fixture set, 1 and 2 at once, with and without embeddings.
        files = sorted(os.path.join(r, f) for r, _, fs in os.walk(pdfs) for f in fs if f.endswith(".pdf"))
        # Each run gets its own models dir (the model linked in, an empty embedding cache), so
        # no run profits from vectors an earlier one cached.
        models = os.environ.get("BUNKO_MODELS_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "bunko", "models")
        embedders = sys.argv[3].split(",") if len(sys.argv) > 3 else ["none", "multilingual-e5-small"]
        for embedder in embedders:
            for conc in [1, 2]:
                d = os.path.join(tmp, f"set-{embedder}-{conc}")
                mdir = os.path.join(tmp, f"models-{embedder}-{conc}")
                os.makedirs(mdir)
                if embedder != "none":
                    os.symlink(os.path.join(models, embedder), os.path.join(mdir, embedder))
                secs, peak, _, rows = run(files, {"BUNKO__LOCAL__EMBEDDER": embedder, "BUNKO__LOCAL__MODELS_DIR": mdir,
                                                  "BUNKO__JOBS__QUEUES__INGEST__CONCURRENCY": str(conc)}, d)
                ready = sum(1 for r in rows if r["status"] == "ready")
                print(json.dumps({"bench": "fixture_set", "documents": len(rows), "ready": ready,
                                  "failed": len(rows) - ready, "embedder": embedder, "concurrency": conc,
                                  "seconds": round(secs, 1), "documents_per_min": round(len(rows) / secs * 60, 1),
                                  "bunko_peak_rss_mib": round(peak, 1)}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(DICT_CACHE, ignore_errors=True)


main()
