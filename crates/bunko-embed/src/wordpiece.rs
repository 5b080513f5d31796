//! BERT's tokenizer (`BertNormalizer` + `BertPreTokenizer` + `WordPiece`), read from a Hugging
//! Face `tokenizer.json`: clean control characters, space out CJK ideographs, lowercase and
//! strip accents when the model is uncased, split on whitespace and punctuation, then greedy
//! longest-match-first subwords with the `##` continuation prefix.

use crate::EmbedError;
use std::collections::HashMap;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

pub struct WordPiece {
    vocab: HashMap<String, u32>,
    unk: u32,
    pub cls: u32,
    pub sep: u32,
    prefix: String,
    max_chars: usize,
    lowercase: bool,
    strip_accents: bool,
    chinese_chars: bool,
    clean_text: bool,
}

impl WordPiece {
    pub fn from_tokenizer_json(json: &serde_json::Value) -> Result<Self, EmbedError> {
        let bad = |m: &str| EmbedError::Format(format!("tokenizer.json: {m}"));
        let model = &json["model"];
        if model["type"] != "WordPiece" {
            return Err(bad("the model is not WordPiece"));
        }
        let vocab: HashMap<String, u32> = model["vocab"]
            .as_object()
            .ok_or_else(|| bad("no vocabulary"))?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), u32::try_from(v.as_u64()?).ok()?)))
            .collect();
        let id = |tok: &str| {
            vocab
                .get(tok)
                .copied()
                .ok_or_else(|| bad(&format!("no {tok} token")))
        };
        let unk = id(model["unk_token"].as_str().unwrap_or("[UNK]"))?;
        let norm = &json["normalizer"];
        let lowercase = norm["lowercase"].as_bool().unwrap_or(false);
        Ok(Self {
            unk,
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            prefix: model["continuing_subword_prefix"]
                .as_str()
                .unwrap_or("##")
                .to_owned(),
            max_chars: model["max_input_chars_per_word"].as_u64().unwrap_or(100) as usize,
            lowercase,
            strip_accents: norm["strip_accents"].as_bool().unwrap_or(lowercase),
            chinese_chars: norm["handle_chinese_chars"].as_bool().unwrap_or(true),
            clean_text: norm["clean_text"].as_bool().unwrap_or(true),
            vocab,
        })
    }

    fn normalise(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            if self.clean_text {
                if c == '\0'
                    || c == '\u{fffd}'
                    || (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
                {
                    continue;
                }
                if c.is_whitespace() {
                    out.push(' ');
                    continue;
                }
            }
            if self.chinese_chars && is_cjk_ideograph(c) {
                out.push(' ');
                out.push(c);
                out.push(' ');
            } else {
                out.push(c);
            }
        }
        if self.strip_accents {
            out = out.nfd().filter(|c| !is_combining_mark(*c)).collect();
        }
        if self.lowercase {
            out = out.to_lowercase();
        }
        out
    }

    /// Content token ids (no `[CLS]`/`[SEP]`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let norm = self.normalise(text);
        let mut ids = Vec::new();
        for word in norm.split_whitespace() {
            let mut start = 0;
            for (i, c) in word.char_indices() {
                if is_punctuation(c) {
                    if start < i {
                        self.word(&word[start..i], &mut ids);
                    }
                    self.word(&word[i..i + c.len_utf8()], &mut ids);
                    start = i + c.len_utf8();
                }
            }
            if start < word.len() {
                self.word(&word[start..], &mut ids);
            }
        }
        ids
    }

    fn word(&self, word: &str, ids: &mut Vec<u32>) {
        if word.chars().count() > self.max_chars {
            ids.push(self.unk);
            return;
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while end > start {
                let sub = &word[start..end];
                let hit = if start > 0 {
                    self.vocab.get(&format!("{}{sub}", self.prefix))
                } else {
                    self.vocab.get(sub)
                };
                if let Some(&id) = hit {
                    found = Some(id);
                    break;
                }
                end = word[..end]
                    .char_indices()
                    .next_back()
                    .map_or(start, |(i, _)| i);
            }
            match found {
                Some(id) => {
                    pieces.push(id);
                    start = end;
                }
                None => {
                    ids.push(self.unk);
                    return;
                }
            }
        }
        ids.extend(pieces);
    }
}

fn is_cjk_ideograph(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// BERT's punctuation: ASCII symbol ranges, and the Unicode punctuation blocks.
fn is_punctuation(c: char) -> bool {
    let cp = c as u32;
    matches!(cp, 33..=47 | 58..=64 | 91..=96 | 123..=126)
        || matches!(cp,
            0x00A1 | 0x00A7 | 0x00AB | 0x00B6 | 0x00B7 | 0x00BB | 0x00BF
            | 0x2010..=0x2027 | 0x2030..=0x205E | 0x3001..=0x3003 | 0x3008..=0x3011
            | 0x3014..=0x301F | 0xFE10..=0xFE19 | 0xFE30..=0xFE4F | 0xFF01..=0xFF03
            | 0xFF05..=0xFF0A | 0xFF0C..=0xFF0F | 0xFF1A | 0xFF1B | 0xFF1F | 0xFF20
            | 0xFF3B..=0xFF3D | 0xFF3F | 0xFF5B | 0xFF5D | 0xFF5F..=0xFF65)
}
