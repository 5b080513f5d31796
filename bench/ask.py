#!/usr/bin/env python3
"""Ask's overhead over raw generation, with the embedded model, at 100k chunks.

One `bunko serve` on a data dir holding N chunks (bench-ask prepare: real text from the
evaluation sets with their e5 vectors). For each question and k in (5, 10):
  ask   POST /api/v1/ask (stream): time to the `sources` event, time to the first answer text,
        and the prompt's token count (the `done` event's usage);
  raw   POST /v1/chat/completions (stream) with the very prompt ask sent — rebuilt here from
        the `sources` event with bunko's completion template, checked by its token count —
        to the same model, alias `local`: time to the first text.
Overhead = the time ask spends before the model is asked (`timings.model_start_ms`:
retrieval with the query embedding, loading the passages, fitting and building the prompt);
budget < 100 ms. Also: ask's time to its first model token (server-side) against raw's time
to its first text — the same prompt, so the difference is that overhead plus run-to-run noise
of the prefill (seconds long on 2 cores). Medians over the questions; sequential, one client.

  cargo build --release -p bunko-server -p bunko-bench --bin bunko --bin bench-ask
  cargo build --release -p bunko-bench --bin bench-search && target/release/bench-search prepare /tmp/bench1m 1000000
  python3 bench/ask.py [CORPUS_DIR=/tmp/bench1m] [N=100000] [QUESTIONS=12]
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
CORPUS = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/bench1m")
N = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
QUESTIONS = int(sys.argv[3]) if len(sys.argv) > 3 else 12
DATA = Path(os.environ.get("BENCH_ASK_DATA", f"/tmp/bench-ask-{N}"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def post(url, body, token):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    return urllib.request.urlopen(req, timeout=600)


def sse(resp):
    """(seconds since the request, event, data) for each event of a streamed response."""
    name, data = "", ""
    for raw in resp:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and data:
            yield name, data
            name, data = "", ""


def completion_prompt(question, sources):
    """bunko_core::rag::prompt, Template::Completion, English, no history."""
    compact = "".join(f"[{s['n']}] {' '.join(s['text'].split())}\n" for s in sources)
    return (
        "Questions answered from numbered sources; each sentence of an answer ends with the "
        "number of its source.\n\nSources:\n[1] The library opens at nine.\n[2] Books may be "
        "borrowed for two weeks.\nQuestion: When does the library open?\nAnswer: The library "
        f"opens at nine [1].\n\nSources:\n{compact}Question: {question}\nAnswer:"
    )


def ask(url, token, question, k):
    t0 = time.perf_counter()
    r = post(url + "/api/v1/ask", {"question": question, "k": k, "stream": True,
                                    "model": "local", "max_tokens": 32}, token)
    out = {"sources_ms": None, "first_text_ms": None}
    for name, data in sse(r):
        now = (time.perf_counter() - t0) * 1000
        v = json.loads(data)
        if name == "sources":
            out["sources_ms"] = now
            out["sources"] = v["sources"]
        elif name in ("delta", "replace") and out["first_text_ms"] is None and v.get("text"):
            out["first_text_ms"] = now
        elif name == "done":
            out["done"] = v
    return out


def raw(url, token, prompt):
    t0 = time.perf_counter()
    r = post(url + "/v1/chat/completions", {
        "model": "local", "stream": True, "max_tokens": 32, "temperature": 0,
        "stop": ["\n", "Question:", "質問:"],
        "messages": [{"role": "user", "content": prompt}],
        "stream_options": {"include_usage": True}}, token)
    first, usage = None, None
    for raw_line in r:
        line = raw_line.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        v = json.loads(line[6:])
        if v.get("usage"):
            usage = v["usage"]
        for c in v.get("choices", []):
            if c.get("delta", {}).get("content") and first is None:
                first = (time.perf_counter() - t0) * 1000
    return first, usage


def median(v):
    v = sorted(x for x in v if x is not None)
    return v[len(v) // 2] if v else None


def main():
    if not (DATA / "bunko.db").exists():
        out = subprocess.run([str(TARGET / "bench-ask"), "prepare", str(DATA), str(CORPUS), str(N)],
                             check=True, capture_output=True, text=True)
        print("prepared:", out.stdout.strip(), file=sys.stderr)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(DATA.parent / f"bench-ask-{N}.log", "w")
    p = subprocess.Popen([str(TARGET / "bunko"), "serve", "--data-dir", str(DATA), "--listen",
                          f"127.0.0.1:{port}"], stdout=log, stderr=log,
                         env={**os.environ, "BUNKO__LIMITS__ENABLED": "false"})
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/readyz", timeout=2)
                break
            except Exception:
                time.sleep(0.5)
        pw = None
        for line in (DATA / "initial-admin-password").read_text().splitlines():
            if line.startswith("password"):
                pw = line.split(":", 1)[1].strip()
        email = "admin@bunko.local"
        token = json.load(post(url + "/api/v1/auth/login", {"email": email, "password": pw}, None))[
            "access_token"]
        questions = [json.loads(l)["text"] for l in (CORPUS / "queries.jsonl").open()]
        questions = [q for q in questions if q.isascii()][:QUESTIONS]
        ask(url, token, questions[0], 5)  # warm-up: model and indexes loaded
        rows = {}
        for k in (5, 10):
            a_src, a_first, r_first, retr, start, mismatched, nf = [], [], [], [], [], 0, 0
            for q in questions:
                a = ask(url, token, q, k)
                if a["done"].get("not_found"):
                    nf += 1
                    continue
                prompt = completion_prompt(q, a["sources"])
                f, usage = raw(url, token, prompt)
                if usage and usage["prompt_tokens"] != a["done"]["usage"]["input_tokens"]:
                    mismatched += 1
                a_src.append(a["sources_ms"])
                a_first.append(a["done"]["timings"]["first_token_ms"])
                start.append(a["done"]["timings"]["model_start_ms"])
                r_first.append(f)
                retr.append(a["done"]["timings"]["retrieval_ms"])
            over = [x - y for x, y in zip(a_first, r_first) if x is not None and y is not None]
            rows[k] = {
                "questions": len(a_src), "not_found": nf,
                "prompt_token_mismatches": mismatched,
                "ask_sources_ms_p50": median(a_src),
                "overhead_model_start_ms_p50": median(start),
                "overhead_model_start_ms_max": max(start) if start else None,
                "ask_first_token_ms_p50": median(a_first),
                "raw_first_text_ms_p50": median(r_first),
                "first_token_difference_ms_p50": median(over),
                "retrieval_ms_p50": median(retr),
            }
        print(json.dumps({"chunks": N, "rows": rows}, indent=1))
    finally:
        p.terminate()
        p.wait(timeout=30)


if __name__ == "__main__":
    main()
