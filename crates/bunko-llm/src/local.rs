//! The embedded chat model behind the `local` provider: a GGUF file (Gemma 3 270M by default)
//! run in-process by llama.cpp (`llama-cpp-2`).
//!
//! One worker thread owns the model and its context; requests queue to it over a bounded
//! channel (the provider's `max_concurrent` bounds them before that). The model is loaded on
//! the first request and unloaded after `idle` without one. Events go back over a Tokio
//! channel; when the caller drops its end (a client disconnect), generation stops at the next
//! token.
//!
//! The default model is a base model, not instruction-tuned: the chat is rendered as a plain
//! completion prompt (`User: …\n\nAssistant:`) and the answer ends at the model's end token, at
//! a line that starts the next turn, or at `max_tokens`.

use bunko_core::llm::{
    ChatEvent, ChatRequest, FinishReason, ProviderError, ProviderErrorKind, Usage,
};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How the embedded model runs.
#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// The GGUF file.
    pub path: PathBuf,
    /// What to tell a user whose model file is missing.
    pub install_hint: String,
    pub threads: usize,
    pub context: u32,
    pub idle: Duration,
    /// Requests that may wait for the worker (the provider's concurrency bound).
    pub queue: usize,
}

/// Answers when the caller gives no `max_tokens`.
const DEFAULT_MAX_TOKENS: u32 = 256;
/// Tokens fed to the model per decode call while reading the prompt.
const BATCH: usize = 512;
/// Lines that start the next turn of the completion prompt end the answer.
const TURN_STOPS: [&str; 2] = ["\nUser:", "\nAssistant:"];

type Events = mpsc::Sender<Result<ChatEvent, ProviderError>>;

struct Job {
    req: ChatRequest,
    events: Events,
}

/// The handle the provider holds; dropping it ends the worker thread.
pub struct LocalModel {
    name: String,
    settings: LocalSettings,
    tx: Mutex<Option<SyncSender<Job>>>,
    state: Arc<State>,
}

/// What the worker reports (for metrics and tests).
#[derive(Debug, Default)]
struct State {
    loaded: AtomicBool,
    generated: AtomicU64,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("path", &self.settings.path)
            .finish()
    }
}

impl LocalModel {
    /// Nothing is loaded, and no thread started, until the first request.
    pub fn new(provider: &str, settings: LocalSettings) -> Self {
        Self {
            name: provider.to_owned(),
            settings,
            tx: Mutex::new(None),
            state: Arc::default(),
        }
    }

    /// Whether the weights are in memory now.
    pub fn is_loaded(&self) -> bool {
        self.state.loaded.load(Ordering::Relaxed)
    }

    /// Tokens generated since start.
    pub fn generated_tokens(&self) -> u64 {
        self.state.generated.load(Ordering::Relaxed)
    }

    fn err(&self, kind: ProviderErrorKind, message: impl Into<String>) -> ProviderError {
        ProviderError::new(kind, &self.name, message)
    }

    /// Starts generating; events arrive on the returned channel, `Done` last (or an error).
    pub fn generate(
        &self,
        req: &ChatRequest,
    ) -> Result<mpsc::Receiver<Result<ChatEvent, ProviderError>>, ProviderError> {
        if !self.settings.path.is_file() {
            return Err(self.err(
                ProviderErrorKind::Unavailable,
                format!(
                    "the embedded chat model is not installed ({} is missing); {}",
                    self.settings.path.display(),
                    self.settings.install_hint
                ),
            ));
        }
        let (events, rx) = mpsc::channel(64);
        let mut job = Job {
            req: req.clone(),
            events,
        };
        let mut guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..2 {
            let tx = match guard.as_ref() {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, jobs) = std::sync::mpsc::sync_channel(self.settings.queue);
                    let settings = self.settings.clone();
                    let name = self.name.clone();
                    let state = self.state.clone();
                    std::thread::Builder::new()
                        .name("bunko-local-llm".into())
                        .spawn(move || worker(&name, &settings, &state, &jobs))
                        .map_err(|e| {
                            self.err(
                                ProviderErrorKind::Unavailable,
                                format!("cannot start the model thread: {e}"),
                            )
                        })?;
                    *guard = Some(tx.clone());
                    tx
                }
            };
            match tx.try_send(job) {
                Ok(()) => return Ok(rx),
                Err(TrySendError::Full(_)) => {
                    let mut e =
                        self.err(ProviderErrorKind::Overloaded, "the embedded model is busy");
                    e.retry_after = Some(Duration::from_secs(1));
                    return Err(e);
                }
                // The worker is gone (it panicked): start a new one once.
                Err(TrySendError::Disconnected(j)) => {
                    job = j;
                    *guard = None;
                }
            }
        }
        Err(self.err(
            ProviderErrorKind::Unavailable,
            "the embedded model's thread stopped",
        ))
    }
}

/// llama.cpp's process-wide state: initialised once, its logs sent to `tracing`.
fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn worker(name: &str, s: &LocalSettings, state: &State, jobs: &Receiver<Job>) {
    let fail = |job: &Job, kind, msg: String| {
        let _ = job
            .events
            .blocking_send(Err(ProviderError::new(kind, name, msg)));
    };
    // Unloaded: wait for work.
    while let Ok(first) = jobs.recv() {
        if first.events.is_closed() {
            continue;
        }
        let started = Instant::now();
        let backend = match backend() {
            Ok(b) => b,
            Err(e) => {
                fail(
                    &first,
                    ProviderErrorKind::Unavailable,
                    format!("llama.cpp: {e}"),
                );
                continue;
            }
        };
        let model = match LlamaModel::load_from_file(backend, &s.path, &LlamaModelParams::default())
        {
            Ok(m) => m,
            Err(e) => {
                fail(
                    &first,
                    ProviderErrorKind::Unavailable,
                    format!("cannot load {}: {e}", s.path.display()),
                );
                continue;
            }
        };
        let threads = i32::try_from(s.threads.max(1)).unwrap_or(4);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(s.context))
            .with_n_batch(BATCH as u32)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let mut ctx = match model.new_context(backend, params) {
            Ok(c) => c,
            Err(e) => {
                fail(
                    &first,
                    ProviderErrorKind::Unavailable,
                    format!("cannot create a llama.cpp context: {e}"),
                );
                continue;
            }
        };
        state.loaded.store(true, Ordering::Relaxed);
        tracing::info!(
            model = %s.path.display(),
            load_ms = started.elapsed().as_millis() as u64,
            threads,
            context = s.context,
            "embedded chat model loaded"
        );
        let mut next = Some(first);
        loop {
            let job = match next.take() {
                Some(j) => j,
                None => match jobs.recv_timeout(s.idle) {
                    Ok(j) => j,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            if job.events.is_closed() {
                continue;
            }
            let result = run(&model, &mut ctx, s.context, &job, &state.generated);
            ctx.clear_kv_cache();
            if let Err((kind, msg)) = result {
                fail(&job, kind, msg);
            }
        }
        drop(ctx);
        drop(model);
        state.loaded.store(false, Ordering::Relaxed);
        tracing::info!(
            idle_secs = s.idle.as_secs(),
            "embedded chat model unloaded after idle time"
        );
    }
}

type RunError = (ProviderErrorKind, String);

/// One answer: reads the prompt, then samples token by token until an end.
fn run(
    model: &LlamaModel,
    ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
    n_ctx: u32,
    job: &Job,
    generated: &AtomicU64,
) -> Result<(), RunError> {
    let req = &job.req;
    let vocab = model.vocab();
    let prompt = vocab.tokenize(req.as_prompt().as_bytes(), true, false);
    let max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let n_ctx = n_ctx as usize;
    if prompt.len() + 1 > n_ctx {
        return Err((
            ProviderErrorKind::Rejected,
            format!(
                "the prompt is {} tokens; the embedded model's context is {n_ctx}",
                prompt.len()
            ),
        ));
    }
    let decode_err = |e: llama_cpp_2::DecodeError| {
        (
            ProviderErrorKind::Unavailable,
            format!("llama.cpp decode failed: {e}"),
        )
    };
    let batch_err = |e: llama_cpp_2::llama_batch::BatchAddError| {
        (
            ProviderErrorKind::Unavailable,
            format!("llama.cpp batch: {e}"),
        )
    };
    let mut batch = LlamaBatch::new(BATCH, 1);
    for (c, chunk) in prompt.chunks(BATCH).enumerate() {
        batch.clear();
        let last_chunk = (c + 1) * BATCH >= prompt.len();
        for (i, t) in chunk.iter().enumerate() {
            let pos = (c * BATCH + i) as i32;
            batch
                .add(*t, pos, &[0], last_chunk && i + 1 == chunk.len())
                .map_err(batch_err)?;
        }
        ctx.decode(&mut batch).map_err(decode_err)?;
        if job.events.is_closed() {
            return Ok(());
        }
    }
    let mut sampler = sampler(req);
    let mut stops: Vec<&str> = TURN_STOPS.to_vec();
    stops.extend(
        req.stop
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty()),
    );
    let mut text = TextOut::default();
    let mut pos = prompt.len();
    let mut produced: u64 = 0;
    let mut piece = Vec::new();
    let finish = loop {
        if produced >= u64::from(max_tokens) || pos >= n_ctx {
            break FinishReason::Length;
        }
        let token = sampler.sample(ctx, batch.n_tokens() - 1);
        sampler.accept(token);
        if vocab.is_eog(token) {
            break FinishReason::Stop;
        }
        produced += 1;
        generated.fetch_add(1, Ordering::Relaxed);
        piece.clear();
        vocab.token_to_piece_into(token, &mut piece, false, None);
        let (out, stopped) = text.push(&piece, &stops);
        if !out.is_empty() && job.events.blocking_send(Ok(ChatEvent::Delta(out))).is_err() {
            return Ok(()); // the caller went away
        }
        if stopped {
            break FinishReason::Stop;
        }
        batch.clear();
        batch
            .add(token, pos as i32, &[0], true)
            .map_err(batch_err)?;
        pos += 1;
        ctx.decode(&mut batch).map_err(decode_err)?;
    };
    let rest = text.finish();
    if !rest.is_empty() {
        let _ = job.events.blocking_send(Ok(ChatEvent::Delta(rest)));
    }
    let _ = job.events.blocking_send(Ok(ChatEvent::Done {
        finish_reason: finish,
        usage: Some(Usage {
            input_tokens: prompt.len() as u64,
            output_tokens: produced,
        }),
    }));
    Ok(())
}

/// Greedy at temperature 0; otherwise top-k 40, top-p, temperature, then a seeded draw.
fn sampler(req: &ChatRequest) -> LlamaSampler {
    let temperature = req.temperature.unwrap_or(0.8);
    if temperature <= 0.0 {
        return LlamaSampler::greedy();
    }
    let seed = req.seed.map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        },
        |s| s as u32,
    );
    LlamaSampler::chain_simple([
        LlamaSampler::top_k(40),
        LlamaSampler::top_p(req.top_p.unwrap_or(0.95).clamp(0.01, 1.0), 1),
        LlamaSampler::temp(temperature),
        LlamaSampler::dist(seed),
    ])
}

/// Turns token pieces (bytes that may split a UTF-8 character) into text, holding back what
/// could be the start of a stop sequence until it is known not to be. Whitespace at the start
/// and at the end of the answer is dropped (a completion after `Assistant:` starts with a
/// space; a turn ends with newlines), the same way whether the answer is streamed or not.
#[derive(Default)]
struct TextOut {
    bytes: Vec<u8>,
    held: String,
    started: bool,
}

impl TextOut {
    /// The text that may go out now, and whether a stop sequence was reached (the text before
    /// it goes out; the stop sequence and anything after do not).
    fn push(&mut self, piece: &[u8], stops: &[&str]) -> (String, bool) {
        self.bytes.extend_from_slice(piece);
        let valid = match std::str::from_utf8(&self.bytes) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_some() => {
                // Not UTF-8 and never will be: replace it rather than hold it forever.
                let s = String::from_utf8_lossy(&self.bytes).into_owned();
                self.bytes.clear();
                self.take(&s);
                return self.release(stops);
            }
            Err(e) => e.valid_up_to(),
        };
        let rest = self.bytes.split_off(valid);
        let done = std::mem::replace(&mut self.bytes, rest);
        self.take(&String::from_utf8_lossy(&done));
        self.release(stops)
    }

    fn take(&mut self, text: &str) {
        if self.started {
            self.held.push_str(text);
        } else {
            let t = text.trim_start();
            self.started = !t.is_empty();
            self.held.push_str(t);
        }
    }

    fn release(&mut self, stops: &[&str]) -> (String, bool) {
        if let Some(at) = stops.iter().filter_map(|s| self.held.find(s)).min() {
            let out = self.held[..at].trim_end().to_owned();
            self.held.clear();
            return (out, true);
        }
        // Keep the longest tail that is a proper prefix of a stop sequence, and the
        // whitespace before it (or at the end): it goes out only once text follows.
        let keep = stops
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .rev()
                    .filter(|n| s.is_char_boundary(*n))
                    .find(|n| self.held.ends_with(&s[..*n]))
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let cut = self.held[..cut].trim_end().len();
        let tail = self.held.split_off(cut);
        (std::mem::replace(&mut self.held, tail), false)
    }

    /// What is left at the end.
    fn finish(&mut self) -> String {
        let mut s = std::mem::take(&mut self.held);
        s.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.bytes)));
        s.truncate(s.trim_end().len());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::TextOut;

    #[test]
    fn split_characters_and_stop_sequences() {
        let stops = ["\nUser:"];
        let mut t = TextOut::default();
        let a = "日本".as_bytes();
        // Leading whitespace goes; the first two bytes of 日 are not text yet.
        assert_eq!(t.push(b" ", &stops), (String::new(), false));
        assert_eq!(t.push(&a[..2], &stops), (String::new(), false));
        assert_eq!(t.push(&a[2..], &stops), ("日本".to_owned(), false));
        // A newline could start a stop sequence: held back.
        assert_eq!(t.push(b" ok\n", &stops), (" ok".to_owned(), false));
        assert_eq!(t.push(b"Us", &stops), (String::new(), false));
        // It was not one after all.
        assert_eq!(t.push(b"a", &stops), ("\nUsa".to_owned(), false));
        // Trailing whitespace waits for what follows it.
        assert_eq!(t.push(b" ", &stops), (String::new(), false));
        assert_eq!(t.push(b"b", &stops), (" b".to_owned(), false));
        assert_eq!(t.push(b"!\n\nUser: more", &stops), ("!".to_owned(), true));
        // Whitespace before what may be a stop sequence is held with it.
        let mut t = TextOut::default();
        assert_eq!(t.push(b"ok.\n\n", &stops), ("ok.".to_owned(), false));
        assert_eq!(t.push(b"\n", &stops), (String::new(), false));
        assert_eq!(t.push(b"User", &stops), (String::new(), false));
        assert_eq!(t.push(b":", &stops), (String::new(), true));
        assert_eq!(t.finish(), "");
        let mut t = TextOut::default();
        assert_eq!(t.push(b"end\n", &stops), ("end".to_owned(), false));
        assert_eq!(t.finish(), "");
        // Bytes that can never be UTF-8 are replaced, not held forever.
        let mut t = TextOut::default();
        assert_eq!(t.push(&[0xff, b'a'], &stops).0, "\u{fffd}a");
    }
}
