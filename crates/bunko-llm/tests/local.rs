//! The embedded chat model (`local`): the real Gemma 3 270M GGUF run by llama.cpp in-process —
//! whole and streamed answers, usage counted in the model's own tokens, greedy answers that
//! repeat, a client that goes away stopping generation, unloading after the idle time and
//! loading again, a missing model file, and an upstream alias falling back to it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use bunko_core::config::Config;
use bunko_core::llm::{ChatEvent, ChatRequest, FinishReason, Message, ProviderErrorKind, Role};
use bunko_llm::gateway::{Gateway, GatewayError};
use bunko_llm::local::LocalModel;
use std::time::{Duration, Instant};

/// The installed model, or `None` with the reason printed. Under CI a missing model is a
/// failure: `scripts/test` pulls it first.
fn installed() -> bool {
    let spec = bunko_core::models::find("gemma-3-270m").unwrap();
    let models = bunko_core::config::LocalConfig::default().resolved_models_dir();
    if spec.installed(&models) {
        return true;
    }
    let why = format!(
        "{} is missing: run `bunko models pull gemma-3-270m`",
        spec.dir(&models).display()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("SKIPPED: {why}");
    false
}

fn config(toml_text: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bunko.toml");
    std::fs::write(&p, toml_text).unwrap();
    Config::load(Some(&p), Vec::new(), &Default::default())
        .unwrap()
        .0
}

fn prompt(text: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        messages: vec![Message {
            role: Role::User,
            content: text.into(),
        }],
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        top_p: None,
        stop: Vec::new(),
        seed: None,
    }
}

fn local(g: &Gateway) -> &LocalModel {
    g.slots()
        .find(|(name, _)| *name == "local")
        .and_then(|(_, s)| s.provider.local_model())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_and_streamed_answers_agree_and_count_real_tokens() {
    if !installed() {
        return;
    }
    let g = Gateway::new(&config("[local]\ngenerator_threads = 2\n")).unwrap();
    assert!(!local(&g).is_loaded(), "loaded before the first request");
    let req = prompt("Write one sentence about libraries.", 24);
    let (whole, served) = g.chat("local", &req).await.unwrap();
    assert_eq!(served.provider, "local");
    assert!(local(&g).is_loaded());
    let usage = whole.usage.unwrap();
    assert!(usage.input_tokens >= 8, "{usage:?}");
    assert!(
        (1..=24).contains(&usage.output_tokens),
        "{usage:?} {whole:?}"
    );
    assert!(!whole.text.trim().is_empty(), "{whole:?}");
    if usage.output_tokens == 24 {
        assert_eq!(whole.finish_reason, FinishReason::Length);
    }

    // Greedy decoding repeats itself, streamed or not.
    let (again, _) = g.chat("local", &req).await.unwrap();
    assert_eq!(again.text, whole.text);
    let (mut stream, _) = g.chat_stream("local", &req).await.unwrap();
    let (mut text, mut deltas, mut done) = (String::new(), 0, None);
    while let Some(e) = stream.next().await {
        match e.unwrap() {
            ChatEvent::Delta(d) => {
                deltas += 1;
                text.push_str(&d);
            }
            ChatEvent::Done {
                finish_reason,
                usage,
            } => done = Some((finish_reason, usage)),
        }
    }
    assert_eq!(text, whole.text);
    assert!(deltas > 1, "one token per event, got {deltas} events");
    assert_eq!(done, Some((whole.finish_reason, whole.usage)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_sequence_ends_the_answer_before_it() {
    if !installed() {
        return;
    }
    let g = Gateway::new(&Config::default()).unwrap();
    let mut req = prompt("Count from one to twenty: one, two, three,", 60);
    let (free, _) = g.chat("local", &req).await.unwrap();
    // Stop at a word the free answer contains after its start.
    let Some(word) = free
        .text
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|w| w.len() >= 3)
        .nth(1)
        .map(str::to_owned)
    else {
        panic!("no words to stop at in {:?}", free.text);
    };
    req.stop = vec![word.clone()];
    let (stopped, _) = g.chat("local", &req).await.unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert!(!stopped.text.contains(&word), "{stopped:?} stop {word}");
    assert!(
        free.text.starts_with(&stopped.text),
        "{free:?} / {stopped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_stops_generation_and_the_model_unloads_when_idle() {
    if !installed() {
        return;
    }
    let g = Gateway::new(&config("[local]\ngenerator_idle_secs = 2\n")).unwrap();
    let m = local(&g);
    let (mut stream, _) = g
        .chat_stream("local", &prompt("Tell a very long story.", 2000))
        .await
        .unwrap();
    assert!(matches!(stream.next().await, Some(Ok(ChatEvent::Delta(_)))));
    drop(stream);
    // The worker notices at its next token; then the count stands still.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_drop = m.generated_tokens();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(m.generated_tokens(), after_drop, "still generating");
    assert!(after_drop < 200, "{after_drop} tokens for a dropped stream");

    // The permit came back: the next request is served.
    let (r, _) = g.chat("local", &prompt("Hello", 4)).await.unwrap();
    assert!(r.usage.unwrap().output_tokens >= 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.is_loaded() {
        assert!(
            Instant::now() < deadline,
            "not unloaded after its idle time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Loaded again on demand.
    let (r, _) = g.chat("local", &prompt("Hello", 4)).await.unwrap();
    assert!(r.usage.unwrap().output_tokens >= 1);
    assert!(m.is_loaded());
}

#[tokio::test]
async fn a_missing_model_file_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::new(&config(&format!(
        "[local]\nmodels_dir = \"{}\"\n",
        dir.path().display()
    )))
    .unwrap();
    match g.chat("local", &prompt("hi", 4)).await {
        Err(GatewayError::Provider(e)) => {
            assert_eq!(e.kind, ProviderErrorKind::Unavailable);
            assert!(e.message.contains("bunko models pull gemma-3-270m"), "{e}");
        }
        other => panic!("{:?}", other.map(|r| r.0)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_is_down_falls_back_to_the_embedded_model() {
    if !installed() {
        return;
    }
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let g = Gateway::new(&config(&format!(
        "[[providers]]\nname = \"down\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nretries = 0\n\n[[models]]\nalias = \"fast\"\nprovider = \"down\"\nmodel = \"gpt-4o-mini\"\nfallbacks = [\"local\"]\n"
    )))
    .unwrap();
    let (r, served) = g.chat("fast", &prompt("Hello", 4)).await.unwrap();
    assert_eq!(served.alias.alias, "local");
    assert_eq!(served.fell_back_from, vec!["fast".to_owned()]);
    assert!(!r.text.is_empty());
}
