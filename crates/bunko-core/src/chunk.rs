//! Structure-aware chunking, the same for every backend. Input: a document's normalised text
//! (its pages joined by a blank line) and where each page starts. Output: chunks that follow
//! the document's structure — a paper's sections (references kept apart and marked), a
//! Japanese law's 編/章/節/款/目/条/項/号 and 附則, a manual's headings, otherwise paragraphs —
//! sized in tokens of the embedding model, overlapping by whole sentences, and never split
//! inside a sentence unless the sentence alone is over the limit.

use crate::text::{detect_language, is_fence, is_kanji_numeral, law_heading};

#[derive(Debug, Clone, Copy)]
pub struct ChunkParams {
    /// Target size in tokens of the embedding model.
    pub target_tokens: usize,
    /// Share of the target carried over from the previous chunk (whole sentences).
    pub overlap: f32,
}

impl Default for ChunkParams {
    fn default() -> Self {
        Self {
            target_tokens: 350,
            overlap: 0.15,
        }
    }
}

/// A chunk before it is stored: character offsets are in the document's normalised text.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub text: String,
    pub char_start: usize,
    pub char_end: usize,
    pub page_start: u32,
    pub page_end: u32,
    pub section_path: String,
    pub language: &'static str,
    pub is_references: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    /// Japanese statute: sections end at articles (条); 項 and 号 are path elements.
    Law,
    /// Anything with headings or paragraphs (papers, manuals, notes).
    General,
}

impl DocKind {
    /// A law when several lines start with an article heading (第…条).
    pub fn detect(text: &str) -> DocKind {
        let articles = text
            .lines()
            .filter(|l| matches!(law_heading(l), Some((6, _))))
            .take(3)
            .count();
        if articles >= 3 {
            DocKind::Law
        } else {
            DocKind::General
        }
    }
}

/// Joins page texts the way chunk offsets count them; returns the text and each page's
/// starting character offset.
pub fn join_pages<'a>(
    pages: impl IntoIterator<Item = (u32, &'a str)>,
) -> (String, Vec<(u32, usize)>) {
    let mut text = String::new();
    let mut chars = 0usize;
    let mut starts = Vec::new();
    for (n, p) in pages {
        if !starts.is_empty() {
            text.push_str("\n\n");
            chars += 2;
        }
        starts.push((n, chars));
        text.push_str(p);
        chars += p.chars().count();
    }
    (text, starts)
}

/// A heading found at the start of a line.
#[derive(Debug, Clone, PartialEq)]
struct Heading {
    level: u8,
    label: String,
    references: bool,
    /// Characters of the line the heading takes; the rest is content (a law's article line).
    own_chars: usize,
}

const REFERENCE_TITLES: &[&str] = &[
    "references",
    "bibliography",
    "literature cited",
    "works cited",
    "参考文献",
    "引用文献",
];
const TOP_TITLES: &[&str] = &[
    "abstract",
    "acknowledgements",
    "acknowledgments",
    "acknowledgement",
    "appendix",
    "introduction",
    "conclusion",
    "conclusions",
    "要旨",
    "概要",
    "はじめに",
    "おわりに",
    "謝辞",
    "付録",
];

fn heading(line: &str, kind: DocKind) -> Option<Heading> {
    let t = line.trim();
    let n = t.chars().count();
    if n == 0 {
        return None;
    }
    if let Some(rest) = t.strip_prefix('#') {
        let hashes = 1 + rest.chars().take_while(|c| *c == '#').count();
        let title = t.trim_start_matches('#').trim();
        if hashes <= 6 && !title.is_empty() && t[hashes..].starts_with(' ') {
            return Some(Heading {
                level: hashes as u8,
                label: short(title),
                references: is_reference_title(title),
                own_chars: n,
            });
        }
    }
    if let Some((level, token)) = law_heading(t) {
        // An article's line carries its text after the token; a chapter's line is its caption.
        let own = if level == 6 { token.chars().count() } else { n };
        let label = if level == 6 { token } else { short(t) };
        return Some(Heading {
            level: level + 10,
            label,
            references: false,
            own_chars: own,
        });
    }
    if t.starts_with("附則") && n <= 40 {
        return Some(Heading {
            level: 11,
            label: "附則".into(),
            references: false,
            own_chars: n,
        });
    }
    if kind == DocKind::Law {
        // 項: "2 前項の…" (the number alone), 号: "一 …".
        let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() && t[digits.len()..].starts_with(' ') {
            return Some(Heading {
                level: 17,
                label: digits.clone(),
                references: false,
                own_chars: digits.chars().count(),
            });
        }
        let kanji: String = t.chars().take_while(|c| is_kanji_numeral(*c)).collect();
        if !kanji.is_empty() && t[kanji.len()..].starts_with(' ') {
            return Some(Heading {
                level: 18,
                label: kanji.clone(),
                references: false,
                own_chars: kanji.chars().count(),
            });
        }
        return None;
    }
    if n > 90 {
        return None;
    }
    let lower = t.to_lowercase();
    let bare = lower.trim_end_matches([':', '.']);
    if is_reference_title(bare) {
        return Some(Heading {
            level: 1,
            label: short(t),
            references: true,
            own_chars: n,
        });
    }
    if TOP_TITLES.contains(&bare) {
        return Some(Heading {
            level: 1,
            label: short(t),
            references: false,
            own_chars: n,
        });
    }
    // Numbered section: "3 Methods", "3. Methods", "3.1 Data", "A.2 Proofs", "1 はじめに".
    let (num, rest) = split_number(t)?;
    let rest = rest.trim_start();
    let first = rest.chars().next()?;
    let ends_like_sentence = rest.ends_with('.') || rest.ends_with('。') || rest.ends_with(',');
    let words = rest.split_whitespace().count();
    if (first.is_uppercase() || crate::text::is_cjk(first))
        && !ends_like_sentence
        && words <= 12
        && !rest.chars().any(|c| c == '=')
    {
        let depth = num.split('.').filter(|p| !p.is_empty()).count().max(1);
        return Some(Heading {
            level: depth as u8,
            label: short(t),
            references: is_reference_title(&rest.to_lowercase()),
            own_chars: n,
        });
    }
    None
}

fn is_reference_title(s: &str) -> bool {
    let s = s.trim().trim_end_matches([':', '.']);
    REFERENCE_TITLES.contains(&s)
}

/// "3.1 Data" → ("3.1", " Data"); also "A.2" (appendix) and a trailing dot ("3. Methods").
fn split_number(t: &str) -> Option<(&str, &str)> {
    let mut end = 0;
    let mut digits = 0;
    for (i, c) in t.char_indices() {
        if c.is_ascii_digit() {
            digits += 1;
            end = i + 1;
        } else if c == '.' && digits > 0 {
            end = i + 1;
        } else if i == 0 && c.is_ascii_uppercase() && t[1..].starts_with('.') {
            end = 1;
        } else {
            break;
        }
    }
    if digits == 0 || digits > 6 {
        return None;
    }
    let rest = &t[end..];
    rest.starts_with(' ').then_some((&t[..end], rest))
}

fn short(s: &str) -> String {
    let s = s.trim().trim_start_matches('#').trim();
    if s.chars().count() <= 60 {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(59).collect();
        out.push('…');
        out
    }
}

/// A sentence (or a heading) with its character span in the document.
#[derive(Debug, Clone)]
struct Unit {
    start: usize,
    end: usize,
    tokens: usize,
    path: String,
    /// The section this unit belongs to, at the granularity chunks must not cross.
    section: usize,
    references: bool,
}

/// Sentence ends: Japanese 。！？ (and their closing brackets), English `.!?` before a space
/// and a capital, digit or CJK character — not after common abbreviations or initials.
fn sentence_spans(line: &[char]) -> Vec<(usize, usize)> {
    const ABBREV: &[&str] = &[
        "e.g", "i.e", "et al", "etc", "fig", "figs", "eq", "eqs", "dr", "mr", "mrs", "ms", "vs",
        "no", "vol", "pp", "cf", "sec", "ch", "approx", "resp", "prof", "inc", "ltd", "jr", "st",
        "al", "ref", "refs", "tab",
    ];
    let mut spans = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        let mut end = None;
        if matches!(c, '。' | '！' | '？' | '!' | '?') {
            end = Some(i + 1);
        } else if c == '.' {
            let next = line.get(i + 1).copied();
            let after = line.get(i + 2).copied();
            if next.is_none() {
                end = Some(i + 1);
            } else if next == Some(' ')
                && after.is_some_and(|a| {
                    a.is_uppercase()
                        || a.is_ascii_digit()
                        || crate::text::is_cjk(a)
                        || a == '('
                        || a == '"'
                })
            {
                let word: String = line[start..i]
                    .iter()
                    .rev()
                    .take_while(|c| !c.is_whitespace())
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<String>()
                    .to_lowercase();
                let word = word.trim_start_matches(['(', '"', '[']);
                let initial = word.chars().count() == 1 && word.chars().all(char::is_alphabetic);
                if !initial && !ABBREV.contains(&word) {
                    end = Some(i + 1);
                }
            }
        }
        if let Some(mut e) = end {
            while e < line.len()
                && matches!(line[e], '」' | '』' | ')' | '）' | '"' | '\'' | '”' | '’')
            {
                e += 1;
            }
            spans.push((start, e));
            while e < line.len() && line[e] == ' ' {
                e += 1;
            }
            start = e;
            i = e;
            continue;
        }
        i += 1;
    }
    if start < line.len() {
        spans.push((start, line.len()));
    }
    spans
}

/// Chunks a document. `count_tokens` counts tokens of the embedding model (any monotone
/// estimate works; the server passes the real tokenizer).
pub fn chunk_document(
    text: &str,
    page_starts: &[(u32, usize)],
    params: ChunkParams,
    count_tokens: &dyn Fn(&str) -> usize,
) -> Vec<Chunk> {
    let kind = DocKind::detect(text);
    let chars: Vec<char> = text.chars().collect();
    let target = params.target_tokens.max(16);
    // Walk the lines, keep the section path, cut lines into sentence units.
    let mut units: Vec<Unit> = Vec::new();
    let mut stack: Vec<(u8, String, bool)> = Vec::new();
    let mut section = 0usize;
    let mut line_start = 0usize;
    let mut in_fence = false;
    let path_of = |stack: &[(u8, String, bool)]| {
        stack
            .iter()
            .map(|(_, l, _)| l.as_str())
            .collect::<Vec<_>>()
            .join(" > ")
    };
    let push_units =
        |units: &mut Vec<Unit>, s: usize, e: usize, path: &str, section: usize, refs: bool| {
            let line = &chars[s..e];
            for (a, b) in sentence_spans(line) {
                let piece: String = line[a..b].iter().collect();
                if piece.trim().is_empty() {
                    continue;
                }
                units.push(Unit {
                    start: s + a,
                    end: s + b,
                    tokens: count_tokens(&piece),
                    path: path.to_owned(),
                    section,
                    references: refs,
                });
            }
        };
    for (idx, c) in chars
        .iter()
        .enumerate()
        .chain(std::iter::once((chars.len(), &'\n')))
    {
        if *c != '\n' {
            continue;
        }
        let (s, e) = (line_start, idx);
        line_start = idx + 1;
        if s >= e {
            continue;
        }
        let line: String = chars[s..e].iter().collect();
        let mut content_from = s;
        // Inside a Markdown code fence a `# …` line is a comment, not a heading.
        let fence = is_fence(&line);
        if fence {
            in_fence = !in_fence;
        }
        if let Some(h) = (!in_fence && !fence)
            .then(|| heading(&line, kind))
            .flatten()
        {
            while stack.last().is_some_and(|(l, _, _)| *l >= h.level) {
                stack.pop();
            }
            let refs = h.references || stack.iter().any(|(_, _, r)| *r);
            stack.push((h.level, h.label.clone(), refs));
            // Chunks do not cross sections; in a law, 項 and 号 stay inside their article's
            // chunks (they are path elements, not boundaries).
            if !(kind == DocKind::Law && h.level >= 17) {
                section += 1;
            }
            let path = path_of(&stack);
            let head_end = s + h.own_chars;
            push_units(&mut units, s, head_end.min(e), &path, section, refs);
            content_from = head_end;
        }
        if content_from < e {
            let refs = stack.iter().any(|(_, _, r)| *r);
            let path = path_of(&stack);
            push_units(&mut units, content_from, e, &path, section, refs);
        }
    }
    // Pack units into chunks.
    let mut chunks = Vec::new();
    let overlap_budget = (target as f32 * params.overlap.clamp(0.0, 0.5)) as usize;
    let mut cur: Vec<Unit> = Vec::new();
    let mut cur_tokens = 0usize;
    let flush = |cur: &[Unit], chunks: &mut Vec<Chunk>| {
        if let (Some(first), Some(last)) = (cur.first(), cur.last()) {
            chunks.push(make_chunk(&chars, page_starts, first, last));
        }
    };
    for u in split_long(units, target, &chars, count_tokens) {
        let new_section = cur.last().is_some_and(|l| l.section != u.section);
        if new_section {
            flush(&cur, &mut chunks);
            cur.clear();
            cur_tokens = 0;
        } else if cur_tokens + u.tokens > target && !cur.is_empty() {
            flush(&cur, &mut chunks);
            // Carry whole sentences back, up to the overlap budget, never the whole chunk.
            let mut keep = Vec::new();
            let mut t = 0;
            for p in cur.iter().rev() {
                if t + p.tokens > overlap_budget || keep.len() + 1 >= cur.len() {
                    break;
                }
                t += p.tokens;
                keep.push(p.clone());
            }
            keep.reverse();
            cur = keep;
            cur_tokens = t;
        }
        cur_tokens += u.tokens;
        cur.push(u);
    }
    flush(&cur, &mut chunks);
    chunks
}

/// Sentences over the target are cut into pieces that fit (the only place a sentence splits).
fn split_long(
    units: Vec<Unit>,
    target: usize,
    chars: &[char],
    count_tokens: &dyn Fn(&str) -> usize,
) -> Vec<Unit> {
    let mut out = Vec::with_capacity(units.len());
    for u in units {
        if u.tokens <= target {
            out.push(u);
            continue;
        }
        let len = u.end - u.start;
        let pieces = u.tokens.div_ceil(target).max(2);
        let step = len.div_ceil(pieces);
        let mut s = u.start;
        while s < u.end {
            let mut e = (s + step).min(u.end);
            // Prefer to cut after a space within the last fifth of the piece.
            if e < u.end
                && let Some(back) = (s + step * 4 / 5..e).rev().find(|&i| chars[i] == ' ')
            {
                e = back + 1;
            }
            let piece: String = chars[s..e].iter().collect();
            out.push(Unit {
                start: s,
                end: e,
                tokens: count_tokens(&piece),
                ..u.clone()
            });
            s = e;
        }
    }
    out
}

fn page_at(page_starts: &[(u32, usize)], offset: usize) -> u32 {
    let i = page_starts.partition_point(|(_, s)| *s <= offset);
    page_starts
        .get(i.saturating_sub(1))
        .map(|(n, _)| *n)
        .unwrap_or(1)
}

fn make_chunk(chars: &[char], page_starts: &[(u32, usize)], first: &Unit, last: &Unit) -> Chunk {
    let text: String = chars[first.start..last.end].iter().collect();
    let text = text.trim_end().to_owned();
    let end = first.start + text.chars().count();
    Chunk {
        language: detect_language(&text),
        page_start: page_at(page_starts, first.start),
        page_end: page_at(page_starts, end.saturating_sub(1).max(first.start)),
        char_start: first.start,
        char_end: end,
        section_path: first.path.clone(),
        is_references: first.references,
        text,
    }
}

/// A tokenizer-free estimate: one token per ideograph or kana, about one per four characters
/// of other scripts. Used when no embedding model is configured.
pub fn estimate_tokens(s: &str) -> usize {
    let mut cjk = 0usize;
    let mut other = 0usize;
    for c in s.chars() {
        if crate::text::is_cjk(c) {
            cjk += 1;
        } else if !c.is_whitespace() {
            other += 1;
        }
    }
    cjk + other.div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(text: &str, target: usize) -> Vec<Chunk> {
        let (t, starts) = join_pages([(1, text)]);
        chunk_document(
            &t,
            &starts,
            ChunkParams {
                target_tokens: target,
                overlap: 0.15,
            },
            &estimate_tokens,
        )
    }

    #[test]
    fn paper_sections_and_references() {
        let text = "Abstract\nWe study things. They are good.\n\
                    1 Introduction\nThings matter. We explain why.\n\
                    2 Methods\n2.1 Data\nWe used data. It was big.\n\
                    References\nSmith, J. (2001). A paper. Journal 3.\nDoe, A. (2002). Another.";
        let c = chunks(text, 350);
        let paths: Vec<&str> = c.iter().map(|c| c.section_path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "Abstract",
                "1 Introduction",
                "2 Methods",
                "2 Methods > 2.1 Data",
                "References"
            ]
        );
        assert!(c.last().is_some_and(|c| c.is_references));
        assert!(!c[0].is_references);
        assert!(c[3].text.contains("We used data. It was big."));
        assert!(c.iter().all(|c| c.language == "en"));
    }

    #[test]
    fn code_fences_hide_comment_lines_from_headings() {
        let text = "# Guide\n\nSet it up.\n\n```toml\n[auth]\n# jwt_secret_file = \"x\"\n```\n\n## Next\n\nMore.";
        let c = chunks(text, 350);
        let paths: Vec<&str> = c.iter().map(|c| c.section_path.as_str()).collect();
        assert_eq!(paths, vec!["Guide", "Guide > Next"]);
        assert!(c[0].text.contains("# jwt_secret_file"));
    }

    #[test]
    fn law_structure_gives_paths() {
        let text = "第一章 総則\n第一条 この法律は、目的を定める。\n2 前項の規定は、適用しない。\n\
                    一 国の機関\n二 地方公共団体\n第二条 この法律において用語の意義は定める。\n\
                    第二章 雑則\n第三条 細則は政令で定める。\n附則\nこの法律は、公布の日から施行する。";
        let c = chunks(text, 350);
        let paths: Vec<&str> = c.iter().map(|c| c.section_path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "第一章 総則",
                "第一章 総則 > 第一条",
                "第一章 総則 > 第二条",
                "第二章 雑則",
                "第二章 雑則 > 第三条",
                "附則"
            ]
        );
        // The article's 項 and 号 stay in its chunk.
        assert!(c[1].text.contains("2 前項") && c[1].text.contains("二 地方公共団体"));
        assert!(c.iter().all(|c| c.language == "ja"));
    }

    #[test]
    fn size_overlap_and_sentences_whole() {
        let sentence = "This sentence has exactly eight words in it. ";
        let text = sentence.repeat(200);
        let c = chunks(text.trim(), 120);
        assert!(c.len() > 5);
        for ch in &c {
            assert!(estimate_tokens(&ch.text) <= 120, "{}", ch.text.len());
            assert!(ch.text.starts_with("This"), "{:?}", ch.text);
            assert!(ch.text.ends_with("in it."), "{:?}", ch.text);
        }
        // Overlap: each chunk starts before the previous one ended.
        for w in c.windows(2) {
            assert!(w[1].char_start < w[0].char_end);
        }
    }

    #[test]
    fn japanese_sentences_and_long_sentence_split() {
        let s = "日本語の文はここで終わる。".repeat(60);
        let c = chunks(&s, 50);
        for ch in &c {
            assert!(ch.text.ends_with('。'), "{}", ch.text);
            assert!(estimate_tokens(&ch.text) <= 50);
        }
        let long = "あ".repeat(500);
        let c = chunks(&long, 100);
        assert!(c.len() >= 5);
        assert!(c.iter().all(|ch| estimate_tokens(&ch.text) <= 100));
    }

    #[test]
    fn pages_and_spans_are_exact() {
        let (t, starts) = join_pages([
            (1, "First page text."),
            (
                2,
                "Second page has a longer sentence with many words to fill it up. More.",
            ),
            (3, "Third."),
        ]);
        let c = chunk_document(&t, &starts, ChunkParams::default(), &estimate_tokens);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].page_start, c[0].page_end), (1, 3));
        let chars: Vec<char> = t.chars().collect();
        let span: String = chars[c[0].char_start..c[0].char_end].iter().collect();
        assert_eq!(span, c[0].text);
        let c = chunk_document(
            &t,
            &starts,
            ChunkParams {
                target_tokens: 16,
                overlap: 0.0,
            },
            &estimate_tokens,
        );
        assert!(c.iter().any(|c| c.page_start == 2 && c.page_end == 2));
    }

    #[test]
    fn abbreviations_do_not_end_sentences() {
        let line: Vec<char> = "See Fig. 3 and e.g. Smith et al. 2001. Next one."
            .chars()
            .collect();
        let spans = sentence_spans(&line);
        assert_eq!(spans.len(), 2, "{spans:?}");
    }
}
