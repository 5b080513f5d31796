"""The official Ollama Python SDK against a live bunko (tests/it/gateway.rs starts it; the
models behind the aliases answer through a stand-in upstream). Exits non-zero on the first
mismatch; prints one line per check."""
import os
import sys

import ollama

client = ollama.Client(host=os.environ["BUNKO_URL"],
                       headers={"Authorization": "Bearer " + os.environ["BUNKO_TOKEN"]})


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail else ""), flush=True)
    if not ok:
        sys.exit(1)


names = [m.model for m in client.list().models]
check("list has the alias", "fast" in names, names)

info = client.show("fast")
check("show", info.modelinfo is not None and info.modelinfo.get("general.context_length") == 128000,
      info.modelinfo)

r = client.chat(model="fast", messages=[{"role": "user", "content": "Say hello"}], stream=False)
check("chat, not streamed", r.message.content == "Hello! How can I assist you today?",
      r.message.content)
check("chat counts", r.prompt_eval_count == 19 and r.eval_count == 10 and r.done,
      (r.prompt_eval_count, r.eval_count))

text, last = "", None
for part in client.chat(model="fast", messages=[{"role": "user", "content": "hi"}], stream=True):
    text += part.message.content or ""
    last = part
check("chat streamed (NDJSON)", text == "Hello 世界", repr(text))
check("stream ends done with counts", last.done and last.eval_count == 3, last)

g = client.generate(model="fast", prompt="Say hello", stream=False)
check("generate", g.response.startswith("Hello"), g.response)
text = "".join(p.response for p in client.generate(model="fast", prompt="hi", stream=True))
check("generate streamed", text == "Hello 世界", repr(text))

if os.environ.get("BUNKO_LOCAL_MODEL") == "1":
    parts = list(client.generate(model="local", prompt="The library opens at", stream=True,
                                 options={"num_predict": 8, "temperature": 0}))
    text = "".join(p.response for p in parts)
    check("generate streamed by the embedded model", text.strip() != "" and parts[-1].done
          and 1 <= parts[-1].eval_count <= 8, (text, parts[-1]))

e = client.embed(model="fast", input=["a", "b"])
check("embed", len(e.embeddings) == 2 and list(e.embeddings[1]) == [0.5, -0.25, 0.125],
      e.embeddings)

try:
    client.chat(model="nope", messages=[{"role": "user", "content": "hi"}], stream=False)
    check("unknown model raises ResponseError", False)
except ollama.ResponseError as err:
    check("unknown model raises ResponseError", err.status_code == 404 and "nope" in err.error,
          (err.status_code, err.error))

bad = ollama.Client(host=os.environ["BUNKO_URL"], headers={"Authorization": "Bearer wrong"})
try:
    bad.list()
    check("a wrong token raises ResponseError 401", False)
except ollama.ResponseError as err:
    check("a wrong token raises ResponseError 401", err.status_code == 401, err.status_code)

print("ALL OK")
