//! SentencePiece-unigram tokenisation as XLM-RoBERTa does it: a per-code-point normalisation
//! map (the NFKC-like table compiled into the model), runs of spaces collapsed, a leading
//! metaspace `▁` added, spaces turned into `▁`, then the most probable segmentation by Viterbi
//! over the piece scores. A character no piece covers becomes `<unk>` at a penalty below every
//! real piece, so unknown scripts degrade to `<unk>` tokens instead of failing.

use crate::EmbedError;
use crate::format::{Cursor, f32s};
use std::collections::HashMap;

const METASPACE: char = '\u{2581}';

pub struct Unigram {
    pieces: HashMap<Box<[u8]>, u32>,
    scores: Vec<f32>,
    unk_score: f32,
    max_piece_bytes: usize,
    normalise: HashMap<char, Box<[char]>>,
    pub bos: u32,
    pub eos: u32,
    pub unk: u32,
}

impl Unigram {
    /// Reads the vocabulary and normalisation sections of an `E5S1` file.
    pub fn read(c: &mut Cursor<'_>) -> Result<Self, EmbedError> {
        let n = c.count("vocabulary size", 10_000_000)?;
        let special = |c: &mut Cursor<'_>, what: &str| -> Result<u32, EmbedError> {
            let v = c.count(what, n.saturating_sub(1))?;
            Ok(v as u32)
        };
        let bos = special(c, "bos id")?;
        let eos = special(c, "eos id")?;
        let _pad = special(c, "pad id")?;
        let unk = special(c, "unk id")?;
        let blob_len = usize::try_from(c.u64("piece bytes length")?)
            .map_err(|_| EmbedError::Format("piece bytes length out of range".into()))?;
        let offs_raw = c.take((n + 1) * 4, "piece offsets")?;
        let offs: Vec<usize> = offs_raw
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .collect();
        let scores = f32s(c.take(n * 4, "piece scores")?);
        let blob = c.take(blob_len, "piece bytes")?;
        let mut pieces = HashMap::with_capacity(n);
        let mut max_piece_bytes = 1;
        let mut min_score = f32::INFINITY;
        for i in 0..n {
            let (a, b) = (offs[i], offs[i + 1]);
            let piece = blob.get(a..b).ok_or_else(|| {
                EmbedError::Format(format!("piece {i} lies outside the vocabulary"))
            })?;
            min_score = min_score.min(scores[i]);
            if piece.is_empty() {
                continue;
            }
            max_piece_bytes = max_piece_bytes.max(piece.len());
            // The first occurrence wins, as in a SentencePiece model.
            pieces.entry(piece.into()).or_insert(i as u32);
        }
        let entries = c.count("normalisation entries", 10_000_000)?;
        let bytes = c.u32("normalisation map length")? as usize;
        let mut m = Cursor::new(c.take(bytes, "normalisation map")?);
        let mut normalise = HashMap::with_capacity(entries);
        for _ in 0..entries {
            let from = m.u32("normalisation code point")?;
            let k = usize::from(m.u8("normalisation length")?);
            let mut to = Vec::with_capacity(k);
            for _ in 0..k {
                let cp = m.u32("normalisation output")?;
                to.push(char::from_u32(cp).ok_or_else(|| {
                    EmbedError::Format(format!("normalisation output U+{cp:X} is not a character"))
                })?);
            }
            if let Some(ch) = char::from_u32(from) {
                normalise.insert(ch, to.into_boxed_slice());
            }
        }
        Ok(Self {
            pieces,
            scores,
            unk_score: min_score - 10.0,
            max_piece_bytes,
            normalise,
            bos,
            eos,
            unk,
        })
    }

    /// The normalised, metaspaced text the pieces are matched against.
    fn normalised(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 3);
        let mut last_space = false;
        let mut first = true;
        let mut push = |ch: char, out: &mut String| {
            let space = ch == ' ';
            if space && last_space {
                return;
            }
            if first && !space {
                out.push(METASPACE);
            }
            first = false;
            last_space = space;
            out.push(if space { METASPACE } else { ch });
        };
        for ch in text.chars() {
            match self.normalise.get(&ch) {
                Some(to) => to.iter().for_each(|&c| push(c, &mut out)),
                None => push(ch, &mut out),
            }
        }
        if first {
            out.push(METASPACE);
        }
        out
    }

    /// Content token ids (no `<s>`/`</s>`), in order.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let norm = self.normalised(text);
        // Byte offset of every character boundary.
        let mut bounds: Vec<usize> = norm.char_indices().map(|(i, _)| i).collect();
        bounds.push(norm.len());
        let n = bounds.len() - 1;
        let bytes = norm.as_bytes();
        let mut best = vec![f32::NEG_INFINITY; n + 1];
        // (piece id or None for <unk>, start char)
        let mut back: Vec<(Option<u32>, usize)> = vec![(None, 0); n + 1];
        best[0] = 0.0;
        for i in 0..n {
            if best[i] == f32::NEG_INFINITY {
                continue;
            }
            let start = bounds[i];
            for e in i + 1..=n {
                let len = bounds[e] - start;
                if len > self.max_piece_bytes {
                    break;
                }
                if let Some(&id) = self.pieces.get(&bytes[start..bounds[e]])
                    && id != self.unk
                {
                    let s = best[i] + self.scores[id as usize];
                    if s > best[e] {
                        best[e] = s;
                        back[e] = (Some(id), i);
                    }
                }
            }
            let s = best[i] + self.unk_score;
            if s > best[i + 1] {
                best[i + 1] = s;
                back[i + 1] = (None, i);
            }
        }
        let mut ids = Vec::new();
        let mut i = n;
        while i > 0 {
            let (id, from) = back[i];
            ids.push(id.unwrap_or(self.unk));
            i = from;
        }
        ids.reverse();
        ids
    }
}
