//! Japanese morphology for the keyword half: lindera over an IPADIC dictionary that bunko
//! builds once from the MeCab IPADIC sources Debian ships (`mecab-ipadic`: EUC-JP CSV and
//! `.def` files in `/usr/share/mecab/dic/ipadic`) and caches in the data dir (~46 MB, a few
//! seconds). Without the sources the keyword half still works on CJK bigrams alone.
//!
//! The morphological field holds, for each Japanese word, its dictionary (base) form —
//! 説明し → 説明 + する — without particles, auxiliary verbs and symbols, so a query for
//! 作成する finds 作成した and a two-character word is not drowned by the bigrams that
//! straddle word boundaries.

use lindera::dictionary::{DictionaryBuilder, Metadata, Schema, load_fs_dictionary};
use lindera::mode::Mode;
use lindera::segmenter::Segmenter;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tantivy::tokenizer::{Token, Tokenizer};

use crate::analyzer::VecTokenStream;
use bunko_core::text::is_cjk;

/// Where Debian's `mecab-ipadic` package puts the dictionary sources.
pub const DEBIAN_IPADIC: &str = "/usr/share/mecab/dic/ipadic";

/// The tokenizer's registered name (the morphological fields' analyzer).
pub const MORPH: &str = "bunko_ja_morph";

#[derive(Debug, thiserror::Error)]
pub enum MorphError {
    #[error(
        "no MeCab IPADIC sources in {0} (install Debian's `mecab-ipadic`, or set search.japanese_dictionary)"
    )]
    Missing(PathBuf),
    #[error("building the Japanese dictionary from {source_dir} into {target}: {message}")]
    Build {
        source_dir: PathBuf,
        target: PathBuf,
        message: String,
    },
    #[error("loading the Japanese dictionary from {path}: {message}")]
    Load { path: PathBuf, message: String },
}

/// A loaded morphological analyzer (shared by every index and query of the process).
pub struct Morphology {
    segmenter: Segmenter,
    /// `ipadic-<fingerprint of the sources>`: what the index records it was made with.
    name: String,
}

impl std::fmt::Debug for Morphology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Morphology")
            .field("name", &self.name)
            .finish()
    }
}

/// IPADIC's column layout (as lindera's own IPADIC package describes it).
fn ipadic_metadata() -> Metadata {
    let fields = [
        "surface",
        "left_context_id",
        "right_context_id",
        "cost",
        "part_of_speech",
        "part_of_speech_subcategory_1",
        "part_of_speech_subcategory_2",
        "part_of_speech_subcategory_3",
        "conjugation_form",
        "conjugation_type",
        "base_form",
        "reading",
        "pronunciation",
    ];
    Metadata::new(
        "ipadic".to_owned(),
        // Debian ships the sources in EUC-JP; lindera decodes them while building.
        "EUC-JP".to_owned(),
        -10000,
        0,
        0,
        "*".to_owned(),
        true,
        false,
        true,
        Schema::new(fields.iter().map(|s| (*s).to_owned()).collect()),
        Schema::new(vec![
            "surface".to_owned(),
            "part_of_speech".to_owned(),
            "reading".to_owned(),
        ]),
    )
}

/// A short fingerprint of the source files (names and sizes): a new dictionary version gets a
/// new cache directory.
fn fingerprint(source: &Path) -> Result<String, MorphError> {
    let missing = || MorphError::Missing(source.to_owned());
    let mut entries: Vec<(String, u64)> = std::fs::read_dir(source)
        .map_err(|_| missing())?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file()
                .then(|| (e.file_name().to_string_lossy().into_owned(), meta.len()))
        })
        .collect();
    if !entries.iter().any(|(n, _)| n == "matrix.def")
        || !entries.iter().any(|(n, _)| n == "char.def")
    {
        return Err(missing());
    }
    entries.sort();
    let mut h = Sha256::new();
    h.update(lindera::get_version().as_bytes());
    for (name, len) in &entries {
        h.update(name.as_bytes());
        h.update(len.to_le_bytes());
    }
    let digest = h.finalize();
    Ok(digest.iter().take(6).map(|b| format!("{b:02x}")).collect())
}

impl Morphology {
    /// Loads the dictionary built from `source` out of `cache` (a directory of built
    /// dictionaries), building it first when it is not there. Concurrent callers (two
    /// processes, parallel tests) each build into their own temporary directory; the first
    /// rename wins and the others use it.
    pub fn prepare(source: &Path, cache: &Path) -> Result<Arc<Morphology>, MorphError> {
        let name = format!("ipadic-{}", fingerprint(source)?);
        let target = cache.join(&name);
        let build_err = |message: String| MorphError::Build {
            source_dir: source.to_owned(),
            target: target.clone(),
            message,
        };
        if !target.join("metadata.json").is_file() {
            std::fs::create_dir_all(cache).map_err(|e| build_err(e.to_string()))?;
            let tmp = cache.join(format!(".{name}.{}.tmp", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            DictionaryBuilder::new(ipadic_metadata())
                .build_dictionary(source, &tmp)
                .map_err(|e| build_err(e.to_string()))?;
            if let Err(e) = std::fs::rename(&tmp, &target) {
                let _ = std::fs::remove_dir_all(&tmp);
                if !target.join("metadata.json").is_file() {
                    return Err(build_err(e.to_string()));
                }
            }
        }
        let dictionary = load_fs_dictionary(&target).map_err(|e| MorphError::Load {
            path: target.clone(),
            message: e.to_string(),
        })?;
        Ok(Arc::new(Morphology {
            segmenter: Segmenter::new(Mode::Normal, dictionary, None),
            name,
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The index terms of `text`: Japanese words in their base form, without particles,
    /// auxiliary verbs and symbols; `(byte from, byte to, term)`. Words without Japanese
    /// characters are left to the multilingual field.
    pub fn terms(&self, text: &str) -> Vec<(usize, usize, String)> {
        let Ok(tokens) = self.segmenter.segment(Cow::Borrowed(text)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for mut t in tokens {
            if !t.surface.chars().any(is_cjk) {
                continue;
            }
            let pos = t.get_detail(0).unwrap_or("").to_owned();
            if matches!(
                pos.as_str(),
                "助詞" | "助動詞" | "記号" | "フィラー" | "連体詞" | "接続詞" | "感動詞"
            ) {
                continue;
            }
            let base = t
                .get_detail(6)
                .filter(|b| !b.is_empty() && *b != "*")
                .map(str::to_owned);
            let term = base.unwrap_or_else(|| t.surface.to_string());
            out.push((t.byte_start, t.byte_end, term));
        }
        out
    }
}

/// The tantivy tokenizer over [`Morphology`]; without one it yields no tokens (the index then
/// searches Japanese by bigrams alone).
#[derive(Clone, Default)]
pub struct MorphTokenizer {
    morph: Option<Arc<Morphology>>,
    tokens: Vec<Token>,
}

impl MorphTokenizer {
    pub fn new(morph: Option<Arc<Morphology>>) -> Self {
        Self {
            morph,
            tokens: Vec::new(),
        }
    }
}

impl Tokenizer for MorphTokenizer {
    type TokenStream<'a> = VecTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream<'a> {
        self.tokens.clear();
        if let Some(m) = &self.morph {
            for (position, (from, to, term)) in m.terms(text).into_iter().enumerate() {
                self.tokens.push(Token {
                    offset_from: from,
                    offset_to: to,
                    position,
                    text: term,
                    position_length: 1,
                });
            }
        }
        VecTokenStream::new(&mut self.tokens)
    }
}

/// The directory built dictionaries are cached in, under a data dir.
pub fn cache_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("dict")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The dictionary, built once (and kept) in the temporary directory; `None` (with the
    /// reason printed) where Debian's sources are not installed.
    pub(crate) fn shared() -> Option<Arc<Morphology>> {
        static CELL: std::sync::OnceLock<Option<Arc<Morphology>>> = std::sync::OnceLock::new();
        CELL.get_or_init(|| {
            let cache = std::env::temp_dir().join("bunko-test-dict");
            match Morphology::prepare(Path::new(DEBIAN_IPADIC), &cache) {
                Ok(m) => Some(m),
                Err(e) => {
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("SKIPPED (morphology): {e}");
                    }
                    None
                }
            }
        })
        .clone()
    }

    #[test]
    fn base_forms_without_particles() {
        let Some(m) = shared() else { return };
        let terms: Vec<String> = m
            .terms("パッケージのメンテナンスを行う方法について説明します。Debian を使う")
            .into_iter()
            .map(|t| t.2)
            .collect();
        assert_eq!(
            terms,
            vec![
                "パッケージ",
                "メンテナンス",
                "行う",
                "方法",
                "説明",
                "する",
                "使う"
            ]
        );
        assert!(m.name().starts_with("ipadic-"));
        // Conjugated forms meet at the base form.
        let past: Vec<String> = m.terms("作成した").into_iter().map(|t| t.2).collect();
        assert_eq!(past, vec!["作成", "する"]);
    }

    #[test]
    fn offsets_point_at_the_surface() {
        let Some(m) = shared() else { return };
        let text = "東京都に住む";
        for (from, to, _) in m.terms(text) {
            assert!(text.is_char_boundary(from) && text.is_char_boundary(to) && from < to);
        }
    }

    #[test]
    fn missing_sources_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let e = Morphology::prepare(&dir.path().join("nope"), dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("mecab-ipadic"), "{e}");
    }
}
