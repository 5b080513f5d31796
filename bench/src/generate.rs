//! `bench-generate MODEL_PATH PROMPT_FILE THREADS MAX_TOKENS ROUNDS`: the embedded chat model
//! (bunko-llm's `local` worker: llama.cpp in-process) on one prompt, greedy, after a load. Prints
//! one JSON line: load time, prompt tokens, time to first token (prompt processing), prompt
//! tokens/s and generated tokens/s (medians over the rounds). `bench/generate.py` runs it beside
//! llama-cpp-python on the same GGUF, prompt and thread count.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use bunko_core::llm::{ChatEvent, ChatRequest, Message, Role};
use bunko_llm::local::{LocalModel, LocalSettings};
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() == 5,
        "usage: bench-generate MODEL_PATH PROMPT_FILE THREADS MAX_TOKENS ROUNDS"
    );
    let prompt = std::fs::read_to_string(&args[1])?;
    let threads: usize = args[2].parse()?;
    let max_tokens: u32 = args[3].parse()?;
    let rounds: usize = args[4].parse()?;
    let model = LocalModel::new(
        "local",
        LocalSettings {
            path: args[0].clone().into(),
            install_hint: String::new(),
            threads,
            context: 4096,
            idle: Duration::from_secs(3600),
            queue: 1,
        },
    );
    let req = ChatRequest {
        messages: vec![Message {
            role: Role::User,
            content: prompt,
        }],
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        top_p: None,
        // No stop sequences beyond the model's end token: generate the full count.
        stop: Vec::new(),
        seed: None,
    };
    let (mut ttft, mut gen_tps, mut prompt_tps, mut first_ttft) = (vec![], vec![], vec![], 0.0);
    let (mut prompt_tokens, mut out_tokens, mut text) = (0, 0, String::new());
    for round in 0..=rounds {
        let t = Instant::now();
        let mut rx = model.generate(&req).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut first = None;
        text.clear();
        while let Some(ev) = rx.recv().await {
            match ev.map_err(|e| anyhow::anyhow!("{e}"))? {
                ChatEvent::Delta(d) => {
                    first.get_or_insert_with(|| t.elapsed().as_secs_f64());
                    text.push_str(&d);
                }
                ChatEvent::Done { usage, .. } => {
                    let total = t.elapsed().as_secs_f64();
                    let first = first.unwrap_or(total);
                    let u = usage.unwrap_or_default();
                    prompt_tokens = u.input_tokens;
                    out_tokens = u.output_tokens;
                    if round == 0 {
                        first_ttft = first; // includes loading the model
                    } else {
                        ttft.push(first);
                        prompt_tps.push(u.input_tokens as f64 / first);
                        gen_tps.push((u.output_tokens.saturating_sub(1)) as f64 / (total - first));
                    }
                }
            }
        }
    }
    let ttft_s = median(ttft);
    println!(
        "{}",
        serde_json::json!({
            "engine": "bunko", "threads": threads, "rounds": rounds,
            "load_s": first_ttft - ttft_s, "prompt_tokens": prompt_tokens,
            "output_tokens": out_tokens, "ttft_ms": ttft_s * 1000.0,
            "prompt_tokens_per_s": median(prompt_tps), "gen_tokens_per_s": median(gen_tps),
            "text": text,
        })
    );
    Ok(())
}
