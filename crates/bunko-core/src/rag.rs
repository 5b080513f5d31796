//! Answers people can check: numbered passages fitted to a model's context, the prompt (a chat
//! template for instruction-tuned models, a completion template for a base model), citation
//! markers filtered as the answer streams (a marker outside the sources never reaches the
//! reader), each sentence's citations scored against the passages they point at, and an
//! extractive answer from the passages when a model cites nothing. Pure functions: the server
//! wires retrieval and the gateway around them.

use crate::answers::Turn;
use crate::llm::{Message, Role, estimate_tokens};
use std::collections::HashSet;
use uuid::Uuid;

/// One retrieved passage, numbered from 1 in the prompt and the response.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    pub n: usize,
    pub chunk_id: String,
    pub document_id: Uuid,
    pub title: String,
    pub page_start: u32,
    pub page_end: u32,
    pub section: String,
    /// Character span in the document's normalised text.
    pub span: (u32, u32),
    pub text: String,
    pub language: String,
}

/// The answer's language: `ja` or `en`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Ja,
    En,
}

impl Lang {
    /// The question's language (Japanese when it has kana or kanji), unless one is asked for.
    pub fn of(question: &str, asked: Option<&str>) -> Lang {
        match asked {
            Some("ja") => Lang::Ja,
            Some("en") => Lang::En,
            _ if crate::text::detect_language(question) == "ja" => Lang::Ja,
            _ => Lang::En,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Ja => "ja",
            Lang::En => "en",
        }
    }

    /// What the reader is told when the documents hold no answer.
    pub fn not_found(self) -> &'static str {
        match self {
            Lang::Ja => "文書にはこの質問への答えが含まれていません。",
            Lang::En => "The documents do not contain an answer to this question.",
        }
    }
}

/// How the prompt is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// System instructions + the passages and the question as the user's turn.
    Chat,
    /// One text a base model continues (no instruction tuning to rely on).
    Completion,
}

impl Template {
    /// The embedded base model continues text; every other provider serves a chat model.
    pub fn for_provider(kind: Option<crate::llm::ProviderKind>) -> Template {
        match kind {
            Some(crate::llm::ProviderKind::Local) => Template::Completion,
            _ => Template::Chat,
        }
    }
}

/// Keeps the first of passages that repeat a chunk or its text, in retrieval order, then as
/// many as fit `budget` tokens (the first one cut to fit when even it does not), numbered 1….
pub fn fit_passages(found: Vec<Passage>, budget: u64) -> Vec<Passage> {
    let mut seen_ids = HashSet::new();
    let mut seen_text = HashSet::new();
    let mut out: Vec<Passage> = Vec::new();
    let mut used = 0u64;
    for mut p in found {
        let text_key: String = p.text.split_whitespace().collect::<Vec<_>>().join(" ");
        if !seen_ids.insert(p.chunk_id.clone()) || !seen_text.insert(text_key) {
            continue;
        }
        let cost = passage_tokens(&p);
        if used + cost > budget {
            if out.is_empty() {
                // Cut the best passage to the budget rather than answer from nothing.
                let keep = budget.saturating_sub(24);
                p.text = cut_to_tokens(&p.text, keep);
                if p.text.is_empty() {
                    break;
                }
            } else {
                break;
            }
        }
        used += passage_tokens(&p);
        p.n = out.len() + 1;
        out.push(p);
    }
    out
}

fn passage_tokens(p: &Passage) -> u64 {
    estimate_tokens(&p.text) + estimate_tokens(&p.title) + 16
}

/// The longest start of `text` within about `tokens` tokens, ending at a character boundary.
pub(crate) fn cut_to_tokens(text: &str, tokens: u64) -> String {
    let mut out = String::new();
    for c in text.chars() {
        out.push(c);
        if estimate_tokens(&out) > tokens {
            out.pop();
            break;
        }
    }
    out
}

fn header(p: &Passage, lang: Lang) -> String {
    let pages = if p.page_start == p.page_end {
        format!("p. {}", p.page_start)
    } else {
        format!("pp. {}–{}", p.page_start, p.page_end)
    };
    let mut h = format!("[{}] {} ({pages}", p.n, p.title);
    if !p.section.is_empty() {
        h.push_str(match lang {
            Lang::Ja => "、",
            Lang::En => ", ",
        });
        h.push_str(&p.section);
    }
    h.push(')');
    h
}

/// The most recent turns of a conversation that fit `budget` tokens (oldest first), with
/// their answers' citation markers taken out: the numbers pointed at the sources of their own
/// turn, not this one's.
pub fn fit_history(turns: &[Turn], budget: u64) -> Vec<Turn> {
    let mut out = Vec::new();
    let mut used = 0u64;
    for t in turns.iter().rev() {
        let (answer, _) = MarkerFilter::whole(0, &t.answer);
        let kept = Turn {
            question: t.question.clone(),
            answer: answer.split_whitespace().collect::<Vec<_>>().join(" "),
            at_ms: t.at_ms,
        };
        let cost = turn_tokens(&kept);
        if used + cost > budget {
            break;
        }
        used += cost;
        out.push(kept);
    }
    out.reverse();
    out
}

fn turn_tokens(t: &Turn) -> u64 {
    estimate_tokens(&t.question) + estimate_tokens(&t.answer) + 8
}

/// Tokens the kept turns take in the prompt.
pub fn history_tokens(turns: &[Turn]) -> u64 {
    turns.iter().map(turn_tokens).sum()
}

/// The text retrieval searches for: a follow-up question with the question before it, so
/// that "and its limitations?" finds passages about what the conversation is about.
pub fn retrieval_text(question: &str, history: &[Turn]) -> String {
    match history.last() {
        Some(t) => format!("{} {question}", t.question),
        None => question.to_owned(),
    }
}

/// The instructions, the earlier turns, the numbered passages and the question, as messages
/// for the gateway.
pub fn prompt(
    question: &str,
    history: &[Turn],
    passages: &[Passage],
    lang: Lang,
    template: Template,
) -> Vec<Message> {
    let mut sources = String::new();
    for p in passages {
        sources.push_str(&header(p, lang));
        sources.push('\n');
        sources.push_str(p.text.trim());
        sources.push_str("\n\n");
    }
    match template {
        Template::Chat => {
            let system = match lang {
                Lang::Ja => {
                    "番号付きの資料だけを根拠に質問に答えてください。各文の根拠となる資料の番号を \
                     [1] や [2][3] のように角括弧で文末に示してください。資料にない事柄は書かないで\
                     ください。資料に答えがなければ「文書にはこの質問への答えが含まれていません。」\
                     とだけ答えてください。日本語で答えてください。"
                }
                Lang::En => {
                    "Answer the question using only the numbered sources. End each sentence with \
                     the numbers of the sources that support it in square brackets, like [1] or \
                     [2][3]. Do not add facts the sources do not state. If the sources do not \
                     contain the answer, reply only: The documents do not contain an answer to \
                     this question. Answer in English."
                }
            };
            let user = match lang {
                Lang::Ja => format!("資料:\n\n{sources}質問: {question}"),
                Lang::En => format!("Sources:\n\n{sources}Question: {question}"),
            };
            let mut messages = vec![Message {
                role: Role::System,
                content: system.to_owned(),
            }];
            for t in history {
                messages.push(Message {
                    role: Role::User,
                    content: t.question.clone(),
                });
                messages.push(Message {
                    role: Role::Assistant,
                    content: t.answer.clone(),
                });
            }
            messages.push(Message {
                role: Role::User,
                content: user,
            });
            messages
        }
        Template::Completion => {
            let mut earlier = String::new();
            for t in history {
                earlier.push_str(&match lang {
                    Lang::Ja => format!("以前の質問: {}\n以前の回答: {}\n\n", t.question, t.answer),
                    Lang::En => format!(
                        "Earlier question: {}\nEarlier answer: {}\n\n",
                        t.question, t.answer
                    ),
                });
            }
            // A worked example first: a base model follows a pattern better than instructions.
            // Each source on one line, as in the example.
            let mut compact = String::new();
            for p in passages {
                compact.push_str(&format!(
                    "[{}] {}\n",
                    p.n,
                    p.text.split_whitespace().collect::<Vec<_>>().join(" ")
                ));
            }
            let text = match lang {
                Lang::Ja => format!(
                    "資料に基づいて質問に答え、各文の末尾に根拠の資料番号を示す。\n\n\
                     資料:\n[1] 図書館は九時に開く。\n[2] 本は二週間借りられる。\n\
                     質問: 図書館は何時に開きますか。\n回答: 図書館は九時に開きます [1]。\n\n\
                     {earlier}資料:\n{compact}質問: {question}\n回答:"
                ),
                Lang::En => format!(
                    "Questions answered from numbered sources; each sentence of an answer ends \
                     with the number of its source.\n\n\
                     Sources:\n[1] The library opens at nine.\n[2] Books may be borrowed for two weeks.\n\
                     Question: When does the library open?\nAnswer: The library opens at nine [1].\n\n\
                     {earlier}Sources:\n{compact}Question: {question}\nAnswer:"
                ),
            };
            vec![Message {
                role: Role::User,
                content: text,
            }]
        }
    }
}

/// Where the embedded base model's answer ends: the end of its line (after it, it goes on to
/// imitate the next source or question, as the worked example in its prompt shows).
pub const COMPLETION_STOPS: &[&str] = &["\n", "Question:", "質問:"];

/// Whether an answer copies a source's header line (`[n] Title (p. …`) instead of answering —
/// what a small base model does when it continues the list of sources.
pub fn echoes_headers(answer: &str, passages: &[Passage]) -> bool {
    answer.lines().any(|line| {
        let line = line.trim();
        passages.iter().any(|p| {
            let title = p.title.trim();
            !title.is_empty()
                && line
                    .strip_prefix(&format!("[{}]", p.n))
                    .is_some_and(|rest| rest.trim_start().starts_with(title))
                || (!title.is_empty() && line.starts_with(title) && line.contains("(p"))
        })
    })
}

/// The most tokens the embedded base model writes for an answer: one line, and a small model
/// that has lost its way only repeats itself after that.
pub const COMPLETION_MAX_TOKENS: u32 = 160;

/// Whether an answer is a loop or a list of numbers rather than text: a word sequence
/// repeated over and over, or words that are mostly not words.
pub fn degenerate(answer: &str) -> bool {
    let (_, plain) = cited_in(answer);
    let words: Vec<&str> = plain.split_whitespace().collect();
    // Japanese has no spaces: look at characters instead.
    let units: Vec<String> = if words.len() < 6 {
        plain
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(String::from)
            .collect()
    } else {
        words.iter().map(|w| w.to_lowercase()).collect()
    };
    if units.len() < 12 {
        return false;
    }
    let mut grams = std::collections::HashMap::new();
    let n = if words.len() < 6 { 6 } else { 3 };
    for w in units.windows(n) {
        *grams.entry(w.concat()).or_insert(0usize) += 1;
    }
    let worst = grams.values().copied().max().unwrap_or(0);
    let wordish = words
        .iter()
        .filter(|w| w.chars().any(char::is_alphabetic))
        .count();
    worst >= 4 || (words.len() >= 12 && wordish * 2 < words.len())
}

/// Tokens the fixed part of a prompt takes (instructions, question, headers' overhead).
pub fn prompt_overhead(question: &str) -> u64 {
    estimate_tokens(question) + 160
}

// ---------------------------------------------------------------------------------------
// Citation markers

/// A marker at the start of `s`: `Complete(len, numbers)`, `Not` (not a marker), or `Incomplete` (it
/// may still become one with more text).
#[derive(Debug, PartialEq)]
enum Marker {
    Complete(usize, Vec<usize>),
    Not,
    Incomplete,
}

const MARKER_MAX: usize = 32;

fn parse_marker(s: &str) -> Marker {
    let mut it = s.char_indices();
    match it.next() {
        Some((_, '[' | '［')) => {}
        _ => return Marker::Not,
    }
    let mut numbers = Vec::new();
    let mut cur: Option<usize> = None;
    for (i, c) in it {
        if i > MARKER_MAX {
            return Marker::Not;
        }
        let digit = match c {
            '0'..='9' => Some(c as usize - '0' as usize),
            '０'..='９' => Some(c as usize - '０' as usize),
            _ => None,
        };
        match (digit, c) {
            (Some(d), _) => cur = Some(cur.unwrap_or(0).saturating_mul(10).saturating_add(d)),
            (None, ',' | '、' | '，' | ' ') => {
                if let Some(n) = cur.take() {
                    numbers.push(n);
                }
            }
            (None, ']' | '］') => {
                if let Some(n) = cur.take() {
                    numbers.push(n);
                }
                return if numbers.is_empty() {
                    Marker::Not
                } else {
                    Marker::Complete(i + c.len_utf8(), numbers)
                };
            }
            _ => return Marker::Not,
        }
    }
    if s.len() > MARKER_MAX {
        Marker::Not
    } else {
        Marker::Incomplete
    }
}

/// Filters citation markers out of an answer as it streams: markers naming a source outside
/// 1..=k are dropped (and remembered), valid ones pass as `[n]`. Text is held only while a
/// `[` may still turn out to be a marker.
#[derive(Debug, Default)]
pub struct MarkerFilter {
    k: usize,
    held: String,
    /// Numbers of dropped markers, in order.
    pub removed: Vec<usize>,
    /// Valid numbers seen, in order.
    pub cited: Vec<usize>,
}

impl MarkerFilter {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            ..Self::default()
        }
    }

    /// The text that may go out now.
    pub fn push(&mut self, delta: &str) -> String {
        self.held.push_str(delta);
        let mut out = String::new();
        loop {
            let Some(i) = self.held.find(['[', '［']) else {
                out.push_str(&self.held);
                self.held.clear();
                break;
            };
            out.push_str(&self.held[..i]);
            self.held.drain(..i);
            match parse_marker(&self.held) {
                Marker::Complete(len, numbers) => {
                    for n in numbers {
                        if (1..=self.k).contains(&n) {
                            out.push_str(&format!("[{n}]"));
                            self.cited.push(n);
                        } else {
                            self.removed.push(n);
                        }
                    }
                    self.held.drain(..len);
                }
                Marker::Not => {
                    let c = self.held.chars().next().map_or(1, char::len_utf8);
                    out.push_str(&self.held[..c]);
                    self.held.drain(..c);
                }
                Marker::Incomplete => break,
            }
        }
        out
    }

    /// What is left at the end (an unclosed `[` is plain text).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Filters a whole answer.
    pub fn whole(k: usize, text: &str) -> (String, MarkerFilter) {
        let mut f = MarkerFilter::new(k);
        let mut out = f.push(text);
        out.push_str(&f.finish());
        (out, f)
    }
}

// ---------------------------------------------------------------------------------------
// Support

/// Content terms: English words of three letters or more (lower case, a plural `s` dropped)
/// that are not function words, and bigrams of CJK runs that are not all hiragana (particles
/// and endings carry no content).
pub fn terms(text: &str) -> HashSet<String> {
    const STOP: &[&str] = &[
        "the", "and", "for", "are", "was", "were", "that", "this", "these", "those", "with",
        "from", "what", "which", "who", "whom", "when", "where", "why", "how", "does", "did",
        "has", "have", "had", "can", "could", "should", "would", "will", "not", "but", "its",
        "their", "there", "they", "them", "then", "than", "into", "onto", "about", "also", "such",
        "may", "might", "must", "any", "all", "each", "other", "been", "being", "our", "your",
        "you", "his", "her", "she", "him", "more", "most", "some", "very", "just", "only", "both",
        "over", "under", "use", "used", "using",
    ];
    let mut out = HashSet::new();
    let mut word = String::new();
    let mut run: Vec<char> = Vec::new();
    let flush_word = |w: &mut String, out: &mut HashSet<String>| {
        if w.chars().count() >= 3 {
            let lower = w.to_lowercase();
            if !STOP.contains(&lower.as_str()) {
                let stem = if lower.len() > 3 && lower.ends_with('s') && !lower.ends_with("ss") {
                    lower[..lower.len() - 1].to_owned()
                } else {
                    lower
                };
                out.insert(stem);
            }
        }
        w.clear();
    };
    let flush_run = |r: &mut Vec<char>, out: &mut HashSet<String>| {
        let hira = |c: char| matches!(c as u32, 0x3040..=0x309F);
        if r.len() == 1 && !hira(r[0]) {
            out.insert(r[0].to_string());
        }
        for w in r.windows(2) {
            if !(hira(w[0]) && hira(w[1])) {
                out.insert(w.iter().collect());
            }
        }
        r.clear();
    };
    for c in text.chars() {
        if crate::text::is_cjk(c) {
            flush_word(&mut word, &mut out);
            run.push(c);
        } else if c.is_alphanumeric() {
            flush_run(&mut run, &mut out);
            word.push(c);
        } else {
            flush_word(&mut word, &mut out);
            flush_run(&mut run, &mut out);
        }
    }
    flush_word(&mut word, &mut out);
    flush_run(&mut run, &mut out);
    out
}

/// The share of `sentence`'s content terms the passage contains (1 when it has none).
pub fn support(sentence: &str, passage: &HashSet<String>) -> f32 {
    let t = terms(sentence);
    if t.is_empty() {
        return 1.0;
    }
    t.iter().filter(|w| passage.contains(*w)).count() as f32 / t.len() as f32
}

/// Splits an answer into sentences, each keeping the markers that follow it (`… rises. [2]`).
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let terminal = match c {
            '。' | '！' | '？' => true,
            '.' | '!' | '?' => chars.get(i + 1).is_none_or(|(_, n)| n.is_whitespace()),
            '\n' => true,
            _ => false,
        };
        if terminal {
            let mut end = at + c.len_utf8();
            // Markers after the full stop belong to this sentence.
            let mut j = i + 1;
            loop {
                while chars.get(j).is_some_and(|(_, c)| *c == ' ') {
                    j += 1;
                }
                let Some(&(m, _)) = chars.get(j) else { break };
                match parse_marker(&text[m..]) {
                    Marker::Complete(len, _) => {
                        end = m + len;
                        while chars.get(j).is_some_and(|(b, _)| *b < end) {
                            j += 1;
                        }
                    }
                    _ => break,
                }
            }
            if !text[start..end].trim().is_empty() {
                out.push(text[start..end].trim());
            }
            start = end;
            while chars.get(i + 1).is_some_and(|(b, _)| *b < end) {
                i += 1;
            }
        }
        i += 1;
    }
    if !text[start..].trim().is_empty() {
        out.push(text[start..].trim());
    }
    out
}

/// The markers (valid numbers) in one sentence, and the sentence without them.
pub(crate) fn cited_in(sentence: &str) -> (Vec<usize>, String) {
    let mut nums = Vec::new();
    let mut plain = String::new();
    let mut rest = sentence;
    while let Some(i) = rest.find(['[', '［']) {
        plain.push_str(&rest[..i]);
        match parse_marker(&rest[i..]) {
            Marker::Complete(len, n) => {
                nums.extend(n);
                rest = &rest[i + len..];
            }
            _ => {
                let c = rest[i..].chars().next().map_or(1, char::len_utf8);
                plain.push_str(&rest[i..i + c]);
                rest = &rest[i + c..];
            }
        }
    }
    plain.push_str(rest);
    (nums, plain)
}

/// How well one cited source supports the sentences that cite it.
#[derive(Debug, Clone, PartialEq)]
pub struct CitationCheck {
    pub n: usize,
    pub kept: bool,
    /// The best share of a citing sentence's content terms found in the passage.
    pub support: f32,
    pub reason: Option<String>,
}

/// Scores every source the (already filtered) answer cites; markers removed by the
/// [`MarkerFilter`] are reported as not kept.
pub fn check_citations(
    answer: &str,
    passages: &[Passage],
    removed: &[usize],
    floor: f32,
) -> Vec<CitationCheck> {
    let pterms: Vec<HashSet<String>> = passages.iter().map(|p| terms(&p.text)).collect();
    let mut best: Vec<Option<f32>> = vec![None; passages.len()];
    for s in sentences(answer) {
        let (nums, plain) = cited_in(s);
        for n in nums {
            if let Some(t) = n.checked_sub(1).and_then(|i| pterms.get(i)) {
                let sc = support(&plain, t);
                let b = &mut best[n - 1];
                *b = Some(b.map_or(sc, |x: f32| x.max(sc)));
            }
        }
    }
    let mut out: Vec<CitationCheck> = best
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            b.map(|support| CitationCheck {
                n: i + 1,
                kept: support >= floor,
                support,
                reason: (support < floor).then(|| {
                    format!(
                        "the cited passage shares {:.0} % of the sentence's terms (floor {:.0} %)",
                        support * 100.0,
                        floor * 100.0
                    )
                }),
            })
        })
        .collect();
    let mut gone: Vec<usize> = removed.to_vec();
    gone.sort_unstable();
    gone.dedup();
    out.extend(gone.into_iter().map(|n| CitationCheck {
        n,
        kept: false,
        support: 0.0,
        reason: Some(format!(
            "there is no source [{n}]; the marker was removed from the answer"
        )),
    }));
    out
}

/// Whether the question shares enough with any passage to be worth asking a model.
pub fn relevant(question: &str, passages: &[Passage], floor: f32) -> bool {
    let q = terms(question);
    if q.is_empty() {
        return !passages.is_empty();
    }
    passages.iter().any(|p| {
        let t = terms(&p.text);
        q.iter().filter(|w| t.contains(*w)).count() as f32 / q.len() as f32 >= floor
    })
}

/// An answer made of the passages' own sentences: from each of the first `max` passages, the
/// sentence sharing most with the question, with its marker.
pub fn extractive(question: &str, passages: &[Passage], max: usize) -> String {
    let q = terms(question);
    let mut parts = Vec::new();
    for p in passages.iter().take(max) {
        let best = sentences(&p.text)
            .into_iter()
            .filter(|s| s.chars().count() >= 8)
            .max_by(|a, b| {
                let score = |s: &str| terms(s).intersection(&q).count();
                score(a).cmp(&score(b)).then(b.len().cmp(&a.len()))
            });
        if let Some(s) = best {
            let s: String = s.chars().take(400).collect();
            parts.push(format!("{} [{}]", s.trim(), p.n));
        }
    }
    parts.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(n: usize, text: &str) -> Passage {
        Passage {
            n,
            chunk_id: format!("d:{n}"),
            document_id: Uuid::nil(),
            title: "Doc".into(),
            page_start: 1,
            page_end: 1,
            section: String::new(),
            span: (0, text.chars().count() as u32),
            text: text.into(),
            language: "en".into(),
        }
    }

    #[test]
    fn markers_outside_the_sources_never_pass_even_split_across_deltas() {
        let mut f = MarkerFilter::new(3);
        let mut out = String::new();
        for d in [
            "Rain falls [",
            "1",
            "]. Snow [",
            "0] melts [99",
            "9]. Ice [2, 7][3]",
            " and [see above] ［２］ end [",
        ] {
            out.push_str(&f.push(d));
        }
        out.push_str(&f.finish());
        assert_eq!(
            out,
            "Rain falls [1]. Snow  melts . Ice [2][3] and [see above] [2] end ["
        );
        assert_eq!(f.removed, vec![0, 999, 7]);
        assert_eq!(f.cited, vec![1, 2, 3, 2]);
    }

    #[test]
    fn sentences_keep_their_trailing_markers() {
        assert_eq!(
            sentences(
                "Water boils at 100 C. [1] It freezes at 0 C [2].\n賃金は毎月払う。[3]次の文。"
            ),
            vec![
                "Water boils at 100 C. [1]",
                "It freezes at 0 C [2].",
                "賃金は毎月払う。[3]",
                "次の文。"
            ]
        );
    }

    #[test]
    fn support_scores_the_cited_passage_and_flags_weak_or_invalid_ones() {
        let ps = vec![
            passage(1, "Water boils at 100 degrees Celsius at sea level."),
            passage(2, "The library opens at nine in the morning."),
        ];
        let answer = "Water boils at 100 degrees at sea level [1]. Water boils at sea level [2].";
        let (text, f) = MarkerFilter::whole(2, &format!("{answer} Extra [5]."));
        let c = check_citations(&text, &ps, &f.removed, 0.5);
        assert_eq!(c.len(), 3, "{c:?}");
        assert!(c[0].kept && c[0].support > 0.9, "{c:?}");
        assert!(!c[1].kept && c[1].support < 0.5, "{c:?}");
        assert!(c[1].reason.is_some());
        assert_eq!((c[2].n, c[2].kept), (5, false));
        // Japanese by bigrams: particles do not count.
        let ja = vec![passage(
            1,
            "使用者は、労働者に対して、毎月一回以上、賃金を支払わなければならない。",
        )];
        let c = check_citations("賃金は毎月一回以上支払う [1]。", &ja, &[], 0.5);
        assert!(c[0].kept, "{c:?}");
    }

    #[test]
    fn passages_are_deduplicated_and_fitted_to_the_budget() {
        let long = "word ".repeat(400);
        let ps = vec![
            passage(1, "alpha beta gamma"),
            passage(2, "alpha  beta gamma"), // the same text
            passage(3, &long),
            passage(4, "delta"),
        ];
        let fit = fit_passages(ps.clone(), 60);
        assert_eq!(fit.iter().map(|p| p.n).collect::<Vec<_>>(), vec![1]);
        let fit = fit_passages(ps.clone(), 10_000);
        assert_eq!(fit.len(), 3);
        assert_eq!(fit[1].text, long);
        assert_eq!(fit[2].n, 3);
        // The first passage alone over budget is cut, not dropped.
        let fit = fit_passages(vec![passage(7, &long)], 64);
        assert_eq!(fit.len(), 1);
        assert!(fit[0].text.len() < long.len() && !fit[0].text.is_empty());
        assert_eq!(fit[0].n, 1);
    }

    #[test]
    fn relevance_extractive_answers_and_prompts() {
        let ps = vec![
            passage(
                1,
                "bunko extracts text with OCR. Scanned pages go through tesseract.",
            ),
            passage(2, "Search is hybrid: keyword and vector halves are fused."),
        ];
        assert!(relevant(
            "How does bunko run OCR on scanned pages?",
            &ps,
            0.3
        ));
        assert!(!relevant("What is the boiling point of mercury?", &ps, 0.3));
        let e = extractive("Which tool reads scanned pages?", &ps, 2);
        assert_eq!(
            e,
            "Scanned pages go through tesseract. [1]\nSearch is hybrid: keyword and vector halves are fused. [2]"
        );
        let chat = prompt("Why?", &[], &ps, Lang::En, Template::Chat);
        assert_eq!(chat.len(), 2);
        assert!(chat[1].content.contains("[2] Doc (p. 1)\nSearch is hybrid"));
        let comp = prompt(
            "なぜ？",
            &[],
            &ps,
            Lang::of("なぜ？", None),
            Template::Completion,
        );
        assert_eq!(comp.len(), 1);
        assert!(comp[0].content.ends_with(
            "[2] Search is hybrid: keyword and vector halves are fused.\n質問: なぜ？\n回答:"
        ));
        assert_eq!(Lang::of("What?", Some("ja")), Lang::Ja);
        assert!(echoes_headers("[2] Doc (p. 1)\nmore", &ps));
        assert!(echoes_headers(" Doc (p. 1, Intro)", &ps));
        assert!(!echoes_headers("Doc says OCR uses tesseract [1].", &ps));
        assert!(degenerate(&"1.23 ".repeat(30)));
        assert!(degenerate(&format!("[1] {}", "It is used. ".repeat(8))));
        assert!(degenerate(&format!(
            "[1] 私は{}",
            "使用するのに".repeat(10)
        )));
        assert!(!degenerate(
            "Scanned pages are read by tesseract, which recognises Japanese and English text [1]."
        ));
        assert!(!degenerate(
            "走査したページは tesseract で読み取られ、日本語と英語の文字を認識します [1]。"
        ));
    }

    #[test]
    fn history_keeps_the_latest_turns_that_fit_without_their_markers() {
        let turn = |q: &str, a: &str| Turn {
            question: q.into(),
            answer: a.into(),
            at_ms: 0,
        };
        let turns = vec![
            turn("What is bunko? ".repeat(200).as_str(), "A library [1]."),
            turn("Does it run OCR?", "Yes, with tesseract [2][9]."),
            turn("Which languages?", "Japanese and English [1]."),
        ];
        let kept = fit_history(&turns, 60);
        assert_eq!(kept.len(), 2, "the long first turn does not fit");
        assert_eq!(kept[0].answer, "Yes, with tesseract .");
        assert_eq!(kept[1].question, "Which languages?");
        assert!(history_tokens(&kept) <= 60);
        assert!(fit_history(&turns, 0).is_empty());
        assert_eq!(
            retrieval_text("And scans?", &kept),
            "Which languages? And scans?"
        );
        let ps = vec![passage(1, "OCR uses tesseract.")];
        let chat = prompt("And scans?", &kept, &ps, Lang::En, Template::Chat);
        let roles: Vec<Role> = chat.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::User,
                Role::Assistant,
                Role::User
            ]
        );
        let comp = prompt("And scans?", &kept, &ps, Lang::En, Template::Completion);
        assert!(
            comp[0].content.contains(
                "Earlier question: Does it run OCR?\nEarlier answer: Yes, with tesseract ."
            )
        );
    }
}
