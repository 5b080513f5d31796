//! Each provider's wire format: the request body, the whole answer, the streamed events and
//! the error body — OpenAI chat completions (SSE), Ollama chat/generate (NDJSON) and Anthropic
//! messages (SSE with typed events), as their API documentation shows them.

use bunko_core::llm::{
    ChatEvent, ChatRequest, ChatResponse, FinishReason, ProviderKind, Role, Usage,
};
use serde_json::{Value, json};

/// The chat endpoint's path under the provider's base URL.
pub fn chat_path(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "/chat/completions",
        ProviderKind::Ollama => "/api/chat",
        ProviderKind::Anthropic => "/v1/messages",
        ProviderKind::Local => "",
    }
}

pub fn chat_body(kind: ProviderKind, model: &str, req: &ChatRequest, stream: bool) -> Value {
    match kind {
        ProviderKind::Openai | ProviderKind::Local => {
            let messages: Vec<Value> = req
                .messages
                .iter()
                .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
                .collect();
            let mut b = json!({"model": model, "messages": messages, "stream": stream});
            if stream {
                b["stream_options"] = json!({"include_usage": true});
            }
            if let Some(t) = req.max_tokens {
                b["max_tokens"] = json!(t);
            }
            if let Some(t) = req.temperature {
                b["temperature"] = json!(t);
            }
            if let Some(p) = req.top_p {
                b["top_p"] = json!(p);
            }
            if let Some(s) = req.seed {
                b["seed"] = json!(s);
            }
            if !req.stop.is_empty() {
                b["stop"] = json!(req.stop);
            }
            b
        }
        ProviderKind::Ollama => {
            let messages: Vec<Value> = req
                .messages
                .iter()
                .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
                .collect();
            let mut options = serde_json::Map::new();
            if let Some(t) = req.max_tokens {
                options.insert("num_predict".into(), json!(t));
            }
            if let Some(t) = req.temperature {
                options.insert("temperature".into(), json!(t));
            }
            if let Some(p) = req.top_p {
                options.insert("top_p".into(), json!(p));
            }
            if let Some(s) = req.seed {
                options.insert("seed".into(), json!(s));
            }
            if !req.stop.is_empty() {
                options.insert("stop".into(), json!(req.stop));
            }
            json!({"model": model, "messages": messages, "stream": stream, "options": options})
        }
        ProviderKind::Anthropic => {
            let system: Vec<&str> = req
                .messages
                .iter()
                .filter(|m| m.role == Role::System)
                .map(|m| m.content.as_str())
                .collect();
            let messages: Vec<Value> = req
                .messages
                .iter()
                .filter(|m| m.role != Role::System)
                .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
                .collect();
            let mut b = json!({
                "model": model,
                "messages": messages,
                "max_tokens": req.max_tokens.unwrap_or(1024),
                "stream": stream,
            });
            if !system.is_empty() {
                b["system"] = json!(system.join("\n\n"));
            }
            if let Some(t) = req.temperature {
                b["temperature"] = json!(t);
            }
            if let Some(p) = req.top_p {
                b["top_p"] = json!(p);
            }
            if !req.stop.is_empty() {
                b["stop_sequences"] = json!(req.stop);
            }
            b
        }
    }
}

fn finish(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("length" | "max_tokens") => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

fn u(v: &Value) -> Option<u64> {
    v.as_u64()
}

/// A whole (non-streamed) answer.
pub fn parse_chat(kind: ProviderKind, v: &Value) -> Result<ChatResponse, String> {
    match kind {
        ProviderKind::Openai | ProviderKind::Local => {
            let choice = v["choices"].get(0).ok_or("no `choices[0]` in the answer")?;
            let text = choice["message"]["content"]
                .as_str()
                .ok_or("no `choices[0].message.content` string")?;
            let usage = match (
                u(&v["usage"]["prompt_tokens"]),
                u(&v["usage"]["completion_tokens"]),
            ) {
                (Some(i), Some(o)) => Some(Usage {
                    input_tokens: i,
                    output_tokens: o,
                }),
                _ => None,
            };
            Ok(ChatResponse {
                text: text.to_owned(),
                finish_reason: finish(choice["finish_reason"].as_str()),
                usage,
            })
        }
        ProviderKind::Ollama => {
            let text = v["message"]["content"]
                .as_str()
                .or_else(|| v["response"].as_str())
                .ok_or("no `message.content` string")?;
            Ok(ChatResponse {
                text: text.to_owned(),
                finish_reason: finish(v["done_reason"].as_str()),
                usage: ollama_usage(v),
            })
        }
        ProviderKind::Anthropic => {
            let blocks = v["content"].as_array().ok_or("no `content` array")?;
            let text: String = blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect();
            let usage = match (
                u(&v["usage"]["input_tokens"]),
                u(&v["usage"]["output_tokens"]),
            ) {
                (Some(i), Some(o)) => Some(Usage {
                    input_tokens: i,
                    output_tokens: o,
                }),
                _ => None,
            };
            Ok(ChatResponse {
                text,
                finish_reason: finish(v["stop_reason"].as_str()),
                usage,
            })
        }
    }
}

fn ollama_usage(v: &Value) -> Option<Usage> {
    match (u(&v["prompt_eval_count"]), u(&v["eval_count"])) {
        (Some(i), Some(o)) => Some(Usage {
            input_tokens: i,
            output_tokens: o,
        }),
        _ => None,
    }
}

/// State carried across a stream's events (Anthropic reports input tokens at the start,
/// output tokens and the stop reason near the end; OpenAI sends usage after the finish).
#[derive(Debug, Default)]
pub struct StreamState {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    finish: Option<FinishReason>,
    pub done: bool,
}

impl StreamState {
    fn done_event(&mut self) -> ChatEvent {
        self.done = true;
        let usage = match (self.input_tokens, self.output_tokens) {
            (Some(i), Some(o)) => Some(Usage {
                input_tokens: i,
                output_tokens: o,
            }),
            _ => None,
        };
        ChatEvent::Done {
            finish_reason: self.finish.unwrap_or(FinishReason::Stop),
            usage,
        }
    }
}

/// One SSE event of an OpenAI or Anthropic stream → the events it carries.
pub fn sse_event(
    kind: ProviderKind,
    st: &mut StreamState,
    event: &str,
    data: &str,
) -> Result<Vec<ChatEvent>, String> {
    let mut out = Vec::new();
    match kind {
        ProviderKind::Openai | ProviderKind::Local => {
            if data.trim() == "[DONE]" {
                out.push(st.done_event());
                return Ok(out);
            }
            let v: Value =
                serde_json::from_str(data).map_err(|e| format!("malformed event JSON: {e}"))?;
            if v.get("error").is_some_and(|e| !e.is_null()) {
                return Err(error_message(&v).unwrap_or_else(|| "error event".into()));
            }
            if let Some(choice) = v["choices"].get(0) {
                if let Some(t) = choice["delta"]["content"].as_str()
                    && !t.is_empty()
                {
                    out.push(ChatEvent::Delta(t.to_owned()));
                }
                if let Some(r) = choice["finish_reason"].as_str() {
                    st.finish = Some(finish(Some(r)));
                }
            }
            if let (Some(i), Some(o)) = (
                u(&v["usage"]["prompt_tokens"]),
                u(&v["usage"]["completion_tokens"]),
            ) {
                st.input_tokens = Some(i);
                st.output_tokens = Some(o);
            }
        }
        ProviderKind::Anthropic => {
            let v: Value =
                serde_json::from_str(data).map_err(|e| format!("malformed event JSON: {e}"))?;
            let ty = if event.is_empty() {
                v["type"].as_str().unwrap_or("")
            } else {
                event
            };
            match ty {
                "message_start" => {
                    st.input_tokens = u(&v["message"]["usage"]["input_tokens"]);
                    st.output_tokens = u(&v["message"]["usage"]["output_tokens"]);
                }
                "content_block_delta" => {
                    if v["delta"]["type"] == "text_delta"
                        && let Some(t) = v["delta"]["text"].as_str()
                    {
                        out.push(ChatEvent::Delta(t.to_owned()));
                    }
                }
                "message_delta" => {
                    if let Some(r) = v["delta"]["stop_reason"].as_str() {
                        st.finish = Some(finish(Some(r)));
                    }
                    if let Some(o) = u(&v["usage"]["output_tokens"]) {
                        st.output_tokens = Some(o);
                    }
                }
                "message_stop" => out.push(st.done_event()),
                "error" => {
                    return Err(error_message(&v).unwrap_or_else(|| "error event".into()));
                }
                // ping, content_block_start, content_block_stop, and types added later.
                _ => {}
            }
        }
        ProviderKind::Ollama => return Err("Ollama streams NDJSON, not SSE".into()),
    }
    Ok(out)
}

/// One NDJSON line of an Ollama stream.
pub fn ndjson_line(st: &mut StreamState, line: &str) -> Result<Vec<ChatEvent>, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("malformed line JSON: {e}"))?;
    if let Some(e) = v["error"].as_str() {
        return Err(e.to_owned());
    }
    let mut out = Vec::new();
    let text = v["message"]["content"]
        .as_str()
        .or_else(|| v["response"].as_str())
        .unwrap_or("");
    if !text.is_empty() {
        out.push(ChatEvent::Delta(text.to_owned()));
    }
    if v["done"] == true {
        st.finish = Some(finish(v["done_reason"].as_str()));
        st.input_tokens = u(&v["prompt_eval_count"]);
        st.output_tokens = u(&v["eval_count"]);
        out.push(st.done_event());
    }
    Ok(out)
}

/// The message of an error body in any of the three shapes (OpenAI and Anthropic:
/// `{"error": {"message": …}}`; Ollama: `{"error": "…"}`).
pub fn error_message(v: &Value) -> Option<String> {
    match &v["error"] {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("message").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// The embeddings endpoint's path and body.
pub fn embed_request(kind: ProviderKind, model: &str, input: &[String]) -> (&'static str, Value) {
    match kind {
        ProviderKind::Ollama => ("/api/embed", json!({"model": model, "input": input})),
        _ => (
            "/embeddings",
            json!({"model": model, "input": input, "encoding_format": "float"}),
        ),
    }
}

/// Vectors and the input token count from an embeddings answer.
pub fn parse_embed(kind: ProviderKind, v: &Value) -> Result<(Vec<Vec<f32>>, Option<u64>), String> {
    let vecs = |arr: &Value| -> Option<Vec<f32>> {
        arr.as_array()?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect()
    };
    match kind {
        ProviderKind::Ollama => {
            let list = v["embeddings"].as_array().ok_or("no `embeddings` array")?;
            let out: Option<Vec<Vec<f32>>> = list.iter().map(vecs).collect();
            Ok((
                out.ok_or("an embedding is not a list of numbers")?,
                u(&v["prompt_eval_count"]),
            ))
        }
        _ => {
            let data = v["data"].as_array().ok_or("no `data` array")?;
            let mut items: Vec<(u64, Vec<f32>)> = Vec::with_capacity(data.len());
            for (i, d) in data.iter().enumerate() {
                let e = vecs(&d["embedding"]).ok_or("an embedding is not a list of numbers")?;
                items.push((d["index"].as_u64().unwrap_or(i as u64), e));
            }
            items.sort_by_key(|x| x.0);
            Ok((
                items.into_iter().map(|x| x.1).collect(),
                u(&v["usage"]["prompt_tokens"]),
            ))
        }
    }
}
