"""Writes minilm_reference.json: all-MiniLM-L6-v2 embeddings and token ids computed by the
official libraries (sentence-transformers on CPU torch, and its Hugging Face tokenizer), which
bunko's own tokenizer and encoder are tested against.

    python -m venv venv && venv/bin/pip install sentence-transformers
    venv/bin/python make_minilm_reference.py ~/.cache/bunko/models/all-minilm-l6-v2
"""
import json
import sys
from pathlib import Path

from sentence_transformers import SentenceTransformer

TEXTS = [
    "The retrieval of documents by keyword and by meaning.",
    "Employers must give workers a rest break during the working day!",
    "Café naïve résumé — ACCENTS and CASE fold (uncased model).",
    "Tokenisation splits un-hyphenated, punctuated,words;and numbers 3.14159.",
    "中文字符 are spaced out; 日本語のテキストも。",
    "  multiple   spaces\tand\nnewlines  ",
]

model_dir = sys.argv[1]
m = SentenceTransformer(model_dir, device="cpu")
vectors = m.encode(TEXTS, normalize_embeddings=True).tolist()
ids = [m.tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
out = {"model": "all-minilm-l6-v2", "texts": TEXTS, "token_ids": ids, "vectors": vectors}
Path(__file__).with_name("minilm_reference.json").write_text(json.dumps(out))
