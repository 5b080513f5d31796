"""The official OpenAI Python SDK against a live bunko (tests/it/gateway.rs starts it, with a
stand-in upstream that answers in OpenAI's recorded wire format). Exits non-zero on the first
mismatch; prints one line per check."""
import os
import sys

import openai

BASE = os.environ["BUNKO_URL"] + "/v1"
TOKEN = os.environ["BUNKO_TOKEN"]
client = openai.OpenAI(base_url=BASE, api_key=TOKEN, max_retries=0, timeout=30)


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail else ""), flush=True)
    if not ok:
        sys.exit(1)


ids = [m.id for m in client.models.list().data]
check("models.list has the alias and the local model", "fast" in ids and "local" in ids, ids)

r = client.chat.completions.create(
    model="fast", messages=[{"role": "user", "content": "Say hello"}], temperature=0)
check("chat, not streamed", r.choices[0].message.content == "Hello! How can I assist you today?",
      r.choices[0].message.content)
check("chat usage from upstream", r.usage.prompt_tokens == 19 and r.usage.completion_tokens == 10,
      r.usage)
check("chat finish_reason", r.choices[0].finish_reason == "stop")

chunks = client.chat.completions.create(
    model="fast", messages=[{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Say hello"}],
    stream=True, stream_options={"include_usage": True})
text, usage, finish = "", None, None
for c in chunks:
    if c.choices:
        text += c.choices[0].delta.content or ""
        finish = c.choices[0].finish_reason or finish
    if c.usage:
        usage = c.usage
check("chat streamed", text == "Hello 世界", repr(text))
check("stream usage chunk", usage is not None and usage.completion_tokens == 3, usage)
check("stream finish_reason", finish == "stop", finish)

r = client.chat.completions.create(
    model="down", messages=[{"role": "user", "content": "hi"}])
check("fallback from a dead provider", r.choices[0].message.content.startswith("Hello"))

if os.environ.get("BUNKO_LOCAL_MODEL") == "1":
    chunks = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Write a sentence about books."}],
        max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True})
    text, usage, n = "", None, 0
    for c in chunks:
        if c.choices:
            text += c.choices[0].delta.content or ""
            n += 1
        if c.usage:
            usage = c.usage
    check("chat streamed by the embedded model", text.strip() != "" and n > 2, repr(text))
    check("the embedded model counts its tokens",
          usage is not None and 1 <= usage.completion_tokens <= 12 and usage.prompt_tokens > 5, usage)
    r = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Write a sentence about books."}],
        max_tokens=12, temperature=0)
    check("the embedded model answers whole, the same greedy text", r.choices[0].message.content == text,
          (r.choices[0].message.content, text))

e = client.embeddings.create(model="fast", input=["a", "b"])
check("embeddings through an alias", len(e.data) == 2 and e.data[1].embedding == [0.5, -0.25, 0.125],
      [d.embedding for d in e.data])

try:
    client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    check("unknown model raises NotFoundError", False)
except openai.NotFoundError as err:
    check("unknown model raises NotFoundError", err.body.get("code") == "model_not_found", err.body)

try:
    client.chat.completions.create(model="fast", messages=[])
    check("empty messages raise an API error", False)
except openai.UnprocessableEntityError as err:
    check("empty messages raise an API error", "messages" in str(err.body), err.body)

bad = openai.OpenAI(base_url=BASE, api_key="not-a-token", max_retries=0)
try:
    bad.models.list()
    check("a wrong key raises AuthenticationError", False)
except openai.AuthenticationError as err:
    check("a wrong key raises AuthenticationError", err.status_code == 401)

print("ALL OK")
