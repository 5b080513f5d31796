#!/usr/bin/env python3
"""The embedded chat model, bunko vs llama-cpp-python: same GGUF (gemma-3-270m Q4_K_M), same
prompt, same thread count, greedy, one run on one machine.

bunko runs llama.cpp in-process through its `local` worker (bench/src/generate.rs);
llama-cpp-python is the anchor MODELS.md names. Reported: load time, time to first token (the
prompt), prompt tokens/s and generated tokens/s, medians over ROUNDS after a warm-up round,
and the ratio bunko / llama-cpp-python (goal >= 0.9 for generation).

  ~/.cache/bunko-bench/venv/bin/pip install llama-cpp-python     # builds llama.cpp (~10 min)
  cargo build --release -p bunko-bench --bin bench-generate
  ~/.cache/bunko-bench/venv/bin/python bench/generate.py [THREADS] [MAX_TOKENS] [ROUNDS]
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(os.environ.get("BUNKO_MODELS_DIR", Path.home() / ".cache/bunko/models"))
GGUF = MODELS / "gemma-3-270m" / "gemma-3-270m-q4_k_m.gguf"
THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else os.cpu_count()
MAX_TOKENS = int(sys.argv[2]) if len(sys.argv) > 2 else 128
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 5
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))

# A prompt of a few hundred tokens: the opening of bunko's own README (no third-party text).
readme = (ROOT / "README.md").read_text(encoding="utf-8")
body = readme.split("\n\n")[1:3]
PROMPT = " ".join(p.replace("\n", " ") for p in body) + "\nSummarise this in one paragraph."
# What bunko's completion-style rendering of one user message gives (ChatRequest::as_prompt).
RENDERED = f"User: {PROMPT}\n\nAssistant:"


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def llama_cpp_python():
    from llama_cpp import Llama
    t = time.perf_counter()
    llm = Llama(model_path=str(GGUF), n_ctx=4096, n_batch=512, n_threads=THREADS,
                n_threads_batch=THREADS, verbose=False)
    load_s = time.perf_counter() - t
    n_prompt = len(llm.tokenize(RENDERED.encode(), add_bos=True))
    ttft, gen, ptps, text, n_out = [], [], [], "", 0
    for r in range(ROUNDS + 1):
        t = time.perf_counter()
        first, n, parts = None, 0, []
        for c in llm.create_completion(RENDERED, max_tokens=MAX_TOKENS, temperature=0.0,
                                       top_k=1, stream=True):
            if first is None:
                first = time.perf_counter() - t
            n += 1
            parts.append(c["choices"][0]["text"])
        total = time.perf_counter() - t
        llm.reset()
        if r == 0:
            continue  # warm-up
        ttft.append(first)
        ptps.append(n_prompt / first)
        gen.append((n - 1) / (total - first))
        text, n_out = "".join(parts), n
    return {"engine": "llama-cpp-python", "threads": THREADS, "rounds": ROUNDS, "load_s": load_s,
            "prompt_tokens": n_prompt, "output_tokens": n_out, "ttft_ms": median(ttft) * 1000,
            "prompt_tokens_per_s": median(ptps), "gen_tokens_per_s": median(gen), "text": text}


def bunko():
    exe = TARGET / "release" / "bench-generate"
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(PROMPT)
    out = subprocess.run([str(exe), str(GGUF), f.name, str(THREADS), str(MAX_TOKENS),
                          str(ROUNDS)], check=True, capture_output=True, text=True)
    os.unlink(f.name)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    # One engine at a time, so neither competes for the cores.
    b = bunko()
    p = llama_cpp_python()
    for r in (b, p):
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                          for k, v in r.items() if k != "text"}))
    same = b["text"].strip()[:80] == p["text"].strip()[:80]
    print(json.dumps({
        "ratio_gen_tokens_per_s": round(b["gen_tokens_per_s"] / p["gen_tokens_per_s"], 3),
        "ratio_prompt_tokens_per_s": round(b["prompt_tokens_per_s"] / p["prompt_tokens_per_s"], 3),
        "ratio_ttft": round(b["ttft_ms"] / p["ttft_ms"], 3),
        "same_greedy_start": same,
        "bunko_text": b["text"][:120], "llama_cpp_python_text": p["text"].strip()[:120],
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
