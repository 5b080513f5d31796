//! Text analysis shared by indexing and querying. One tokenizer handles mixed Japanese and
//! English text: runs of letters/digits in alphabetic scripts become word tokens; runs of
//! CJK characters (kanji, hiragana, katakana) become overlapping character bigrams (a single
//! character stays a unigram), which needs no dictionary and never fails. Full-width ASCII is
//! folded to ASCII first. English stop words are removed and English words stemmed (the
//! filters leave CJK bigrams untouched). Japanese text is also indexed by words in a second
//! field when a morphological dictionary is available (`crate::morph`).

use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, Stemmer, StopWordFilter, TextAnalyzer, Token,
    TokenStream, Tokenizer,
};

/// The analyzer's registered name.
pub const MULTI: &str = "bunko_multi";

/// Analyzer variants, for the evaluation's ablation. `Multi` is what bunko indexes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `Multi` plus the morphological Japanese field (what bunko uses when the dictionary is
    /// available).
    Morph,
    /// `Morph` with a Japanese query's bigrams left out (words alone; the ablation).
    Words,
    /// CJK bigrams + English stop words + stemming.
    Multi,
    /// CJK bigrams + English stop words, no stemming.
    NoStem,
    /// Whitespace-separated tokens, lowercased (what a naive engine does to Japanese).
    Whitespace,
}

impl Variant {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "morph" => Some(Variant::Morph),
            "words" => Some(Variant::Words),
            "multi" => Some(Variant::Multi),
            "nostem" => Some(Variant::NoStem),
            "whitespace" => Some(Variant::Whitespace),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Morph => "morph",
            Variant::Words => "words",
            Variant::Multi => "multi",
            Variant::NoStem => "nostem",
            Variant::Whitespace => "whitespace",
        }
    }

    pub fn analyzer(self) -> TextAnalyzer {
        use tantivy::tokenizer::WhitespaceTokenizer;
        match self {
            Variant::Morph | Variant::Words | Variant::Multi => multi_analyzer(),
            Variant::NoStem => {
                let b = TextAnalyzer::builder(MultiTokenizer::default())
                    .filter(RemoveLongFilter::limit(64))
                    .filter(LowerCaser);
                match StopWordFilter::new(Language::English) {
                    Some(stop) => b.filter(stop).build(),
                    None => b.build(),
                }
            }
            Variant::Whitespace => TextAnalyzer::builder(WhitespaceTokenizer::default())
                .filter(RemoveLongFilter::limit(64))
                .filter(LowerCaser)
                .build(),
        }
    }
}

pub use bunko_core::text::is_cjk;

/// Full-width ASCII (ＡＢＣ１２３) → ASCII.
fn fold(c: char) -> char {
    match c as u32 {
        0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        0x3000 => ' ',
        _ => c,
    }
}

#[derive(Clone, Default)]
pub struct MultiTokenizer {
    tokens: Vec<Token>,
}

pub struct VecTokenStream<'a> {
    tokens: &'a mut Vec<Token>,
    next: usize,
}

impl<'a> VecTokenStream<'a> {
    pub fn new(tokens: &'a mut Vec<Token>) -> Self {
        Self { tokens, next: 0 }
    }
}

impl TokenStream for VecTokenStream<'_> {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }
    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }
    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

impl Tokenizer for MultiTokenizer {
    type TokenStream<'a> = VecTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream<'a> {
        self.tokens.clear();
        let chars: Vec<(usize, char)> = text.char_indices().map(|(i, c)| (i, fold(c))).collect();
        let end_of = |i: usize| chars.get(i).map(|c| c.0).unwrap_or(text.len());
        let mut position = 0usize;
        let mut push = |tokens: &mut Vec<Token>, from: usize, to: usize, s: String| {
            tokens.push(Token {
                offset_from: from,
                offset_to: to,
                position,
                text: s,
                position_length: 1,
            });
            position += 1;
        };
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i].1;
            if is_cjk(c) {
                let start = i;
                while i < chars.len() && is_cjk(chars[i].1) {
                    i += 1;
                }
                if i - start == 1 {
                    push(&mut self.tokens, chars[start].0, end_of(i), c.to_string());
                } else {
                    for j in start..i - 1 {
                        let s: String = [chars[j].1, chars[j + 1].1].iter().collect();
                        push(&mut self.tokens, chars[j].0, end_of(j + 2), s);
                    }
                }
            } else if c.is_alphanumeric() {
                let start = i;
                while i < chars.len() && chars[i].1.is_alphanumeric() && !is_cjk(chars[i].1) {
                    i += 1;
                }
                let s: String = chars[start..i].iter().map(|c| c.1).collect();
                push(&mut self.tokens, chars[start].0, end_of(i), s);
            } else {
                i += 1;
            }
        }
        VecTokenStream::new(&mut self.tokens)
    }
}

/// The analyzer for every text field (and for queries against them).
pub fn multi_analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(MultiTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop) => builder
            .filter(stop)
            .filter(Stemmer::new(Language::English))
            .build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

/// The tokens the analyzer produces (for queries and tests).
pub fn analyze(text: &str) -> Vec<String> {
    analyze_with(Variant::Multi, text)
}

pub fn analyze_with(variant: Variant, text: &str) -> Vec<String> {
    let mut a = variant.analyzer();
    let mut stream = a.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// A snippet of `text` around its first token in `terms`, at most about `max_chars`
/// characters, with every such token in `<b>…</b>` and the rest HTML-escaped (what the
/// embedded index's snippets look like, for an index that stores the analyzer's tokens).
/// Without a match: the opening of the text.
pub fn highlight(
    text: &str,
    terms: &std::collections::HashSet<String>,
    max_chars: usize,
) -> String {
    let mut a = multi_analyzer();
    let mut stream = a.token_stream(text);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    while stream.advance() {
        let t = stream.token();
        if terms.contains(&t.text) {
            spans.push((t.offset_from, t.offset_to));
        }
    }
    // The window: from a little before the first match, `max_chars` characters long.
    let first = spans.first().map_or(0, |s| s.0);
    let mut start = text[..first]
        .char_indices()
        .rev()
        .nth(40)
        .map_or(0, |(i, _)| i);
    if spans.is_empty() {
        start = 0;
    }
    let end = text[start..]
        .char_indices()
        .nth(max_chars)
        .map_or(text.len(), |(i, _)| start + i);
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut out = String::new();
    let mut at = start;
    for &(from, to) in spans.iter().filter(|s| s.0 >= start && s.1 <= end) {
        if from < at {
            continue;
        }
        out.push_str(&escape(&text[at..from]));
        out.push_str("<b>");
        out.push_str(&escape(&text[from..to]));
        out.push_str("</b>");
        at = to;
    }
    out.push_str(&escape(&text[at..end]));
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::analyze;

    #[test]
    fn highlights_the_analyzed_matches() {
        let terms: std::collections::HashSet<String> = ["seri", "irregular"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(
            super::highlight("Irregular <time> Series & more", &terms, 240),
            "<b>Irregular</b> &lt;time&gt; <b>Series</b> &amp; more"
        );
        let long = format!("{} needle {}", "word ".repeat(100), "tail ".repeat(100));
        let terms: std::collections::HashSet<String> = ["needl".to_owned()].into();
        let h = super::highlight(&long, &terms, 120);
        assert!(
            h.contains("<b>needle</b>") && h.chars().count() < 140,
            "{h}"
        );
        assert!(super::highlight("no match here", &terms, 5).starts_with("no ma"));
    }

    #[test]
    fn english_is_lowercased_stemmed_and_stopped() {
        assert_eq!(
            analyze("The Indexing of Libraries"),
            vec!["index", "librari"]
        );
    }

    #[test]
    fn japanese_becomes_bigrams_and_mixes_with_english() {
        assert_eq!(
            analyze("パッケージを作る"),
            vec!["パッ", "ッケ", "ケー", "ージ", "ジを", "を作", "作る"]
        );
        assert_eq!(
            analyze("Debian の パッケージ"),
            vec!["debian", "の", "パッ", "ッケ", "ケー", "ージ"]
        );
        assert_eq!(
            analyze("ＤＥＢＩＡＮ　ｄｅｂ"),
            vec!["debian", "deb"],
            "full-width folds to ASCII"
        );
    }

    #[test]
    fn ablation_variants() {
        use super::{Variant, analyze_with};
        assert_eq!(
            analyze_with(Variant::NoStem, "The Indexing of Libraries"),
            vec!["indexing", "libraries"]
        );
        assert_eq!(
            analyze_with(Variant::Whitespace, "Debian のパッケージ 作成"),
            vec!["debian", "のパッケージ", "作成"]
        );
        assert_eq!(Variant::parse("nostem"), Some(Variant::NoStem));
        assert_eq!(Variant::parse("morph"), Some(Variant::Morph));
        assert_eq!(Variant::parse("mecab"), None);
    }

    #[test]
    fn punctuation_emoji_and_controls_give_no_tokens() {
        assert!(analyze("!!! ??? 🎉🎉 \u{0}\u{7}").is_empty());
        assert!(analyze("").is_empty());
    }
}
