//! Document summaries by map-reduce: the document's chunks (references left out) grouped into
//! parts that fit a token budget, breaking at section changes; each part summarised ("map");
//! the part summaries combined into one summary that cites the parts as `[n]` ("reduce"),
//! in rounds when they do not fit one prompt. Pure functions: the server's job calls the
//! gateway around them.

use crate::documents::ChunkRecord;
use crate::llm::{Message, Role, estimate_tokens};
use crate::rag::{Lang, Template, sentences, support, terms};

/// A stretch of the document summarised in one call, or a summary standing for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// 1-based, in document order.
    pub n: usize,
    pub section: String,
    pub page_start: u32,
    pub page_end: u32,
    pub text: String,
}

/// Groups chunks (in document order) into parts of at most `budget` tokens. A part also ends
/// at a change of top-level section once it is half full, so parts follow the document's
/// structure. Reference lists are left out unless they are all there is.
pub fn parts(chunks: &[ChunkRecord], budget: u64) -> Vec<Part> {
    let body: Vec<&ChunkRecord> = chunks.iter().filter(|c| !c.is_references).collect();
    let list: Vec<&ChunkRecord> = if body.is_empty() {
        chunks.iter().collect()
    } else {
        body
    };
    let top = |s: &str| s.split(" > ").next().unwrap_or("").to_owned();
    let mut out: Vec<Part> = Vec::new();
    let mut used = 0u64;
    for c in list {
        let cost = estimate_tokens(&c.text);
        let new_section = out
            .last()
            .is_some_and(|p| top(&p.section) != top(&c.section_path));
        let start_new = match out.last() {
            None => true,
            Some(_) => used + cost > budget || (new_section && used * 2 >= budget),
        };
        if start_new {
            out.push(Part {
                n: out.len() + 1,
                section: c.section_path.clone(),
                page_start: c.page_start,
                page_end: c.page_end,
                text: String::new(),
            });
            used = 0;
        }
        let Some(p) = out.last_mut() else { continue };
        let text = if cost > budget {
            crate::rag::cut_to_tokens(&c.text, budget)
        } else {
            c.text.clone()
        };
        if !p.text.is_empty() {
            p.text.push_str("\n\n");
        }
        p.text.push_str(&text);
        p.page_end = p.page_end.max(c.page_end);
        used += estimate_tokens(&text);
    }
    out
}

fn pages(p: &Part) -> String {
    if p.page_start == p.page_end {
        format!("p. {}", p.page_start)
    } else {
        format!("pp. {}–{}", p.page_start, p.page_end)
    }
}

fn messages(template: Template, system: &str, user: String, completion: String) -> Vec<Message> {
    match template {
        Template::Chat => vec![
            Message {
                role: Role::System,
                content: system.to_owned(),
            },
            Message {
                role: Role::User,
                content: user,
            },
        ],
        Template::Completion => vec![Message {
            role: Role::User,
            content: completion,
        }],
    }
}

/// The "map" prompt: summarise one part.
pub fn map_prompt(title: &str, part: &Part, lang: Lang, template: Template) -> Vec<Message> {
    let place = if part.section.is_empty() {
        pages(part)
    } else {
        format!("{}, {}", pages(part), part.section)
    };
    match lang {
        Lang::Ja => messages(
            template,
            "文書の一部を、書かれている事実だけを使って日本語で2〜3文に要約してください。",
            format!("文書: {title}（{place}）\n\n{}\n\n要約:", part.text),
            format!(
                "本文: 図書館は九時に開き、五時に閉まる。本は二週間借りられる。\n\
                 要約: 図書館は九時から五時まで開いており、本を二週間貸し出す。\n\n\
                 本文: {}\n要約:",
                one_line(&part.text)
            ),
        ),
        Lang::En => messages(
            template,
            "Summarise this part of a document in two or three sentences, using only what it \
             states. Answer in English.",
            format!("Document: {title} ({place})\n\n{}\n\nSummary:", part.text),
            format!(
                "Text: The library opens at nine and closes at five. Books may be borrowed for \
                 two weeks, and renewed once.\nSummary: The library is open from nine to five \
                 and lends books for two weeks.\n\nText: {}\nSummary:",
                one_line(&part.text)
            ),
        ),
    }
}

/// The "reduce" prompt: combine numbered part summaries, citing them as `[n]`.
pub fn reduce_prompt(title: &str, parts: &[Part], lang: Lang, template: Template) -> Vec<Message> {
    let mut list = String::new();
    for p in parts {
        list.push_str(&format!("[{}] ({}) {}\n", p.n, pages(p), p.text.trim()));
    }
    match lang {
        Lang::Ja => messages(
            template,
            "番号付きの部分要約をまとめて、文書全体の要約を日本語で書いてください。各文の末尾に、\
             根拠の部分の番号を [1] のように示してください。部分要約にない事柄は書かないでください。",
            format!("文書: {title}\n\n部分要約:\n{list}\n全体の要約:"),
            format!(
                "部分要約:\n[1] 図書館は九時に開く。\n[2] 本は二週間借りられる。\n\
                 全体の要約: 図書館は九時に開き [1]、本を二週間貸し出す [2]。\n\n\
                 部分要約:\n{list}全体の要約:"
            ),
        ),
        Lang::En => messages(
            template,
            "Combine the numbered part summaries into a summary of the whole document. End \
             each sentence with the numbers of the parts it comes from, like [1] or [2][3]. Do \
             not add anything the part summaries do not state. Answer in English.",
            format!("Document: {title}\n\nPart summaries:\n{list}\nSummary of the whole document:"),
            format!(
                "Part summaries:\n[1] The library opens at nine.\n[2] Books may be borrowed for \
                 two weeks.\nSummary: The library opens at nine [1] and lends books for two \
                 weeks [2].\n\nPart summaries:\n{list}Summary:"
            ),
        ),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Where a base model's summary ends: its line (it then starts the pattern again).
pub const COMPLETION_STOPS: &[&str] = &["\n", "Text:", "本文:", "Part summaries:", "部分要約:"];

fn sentence_key(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The sentences of a part's summary worth keeping: each once, with content, and mostly
/// made of the part's own terms (a small model drifts or repeats itself).
pub fn clean_map(summary: &str, source: &str, floor: f32) -> Option<String> {
    let st = terms(source);
    let mut seen = std::collections::HashSet::new();
    let mut keep = Vec::new();
    for s in sentences(summary) {
        if !prose(s) || support(s, &st) < floor || !seen.insert(sentence_key(s)) {
            continue;
        }
        keep.push(s.trim());
    }
    let out = keep.join(" ");
    usable(&out).then_some(out)
}

/// The sentences of a whole-document summary that cite a part which supports them (markers
/// outside the parts were already removed); each once.
pub fn clean_reduce(summary: &str, parts: &[Part], floor: f32) -> Option<String> {
    let pt: Vec<_> = parts.iter().map(|p| terms(&p.text)).collect();
    let mut seen = std::collections::HashSet::new();
    let mut keep = Vec::new();
    for s in sentences(summary) {
        let (nums, plain) = crate::rag::cited_in(s);
        let supported = nums.iter().any(|n| {
            n.checked_sub(1)
                .and_then(|i| pt.get(i))
                .is_some_and(|t| support(&plain, t) >= floor)
        });
        if supported && prose(s) && seen.insert(sentence_key(&plain)) {
            keep.push(s.trim());
        }
    }
    let out = keep.join(" ");
    usable(&out).then_some(out)
}

/// Tokens a reduce prompt over `parts` takes.
pub fn reduce_tokens(parts: &[Part]) -> u64 {
    parts
        .iter()
        .map(|p| estimate_tokens(&p.text) + 12)
        .sum::<u64>()
        + 120
}

/// Groups consecutive parts whose summaries fit `budget` together (a reduce round when all
/// of them do not fit one prompt).
pub fn reduce_groups(parts: &[Part], budget: u64) -> Vec<Vec<Part>> {
    let mut groups: Vec<Vec<Part>> = Vec::new();
    let mut used = 0u64;
    for p in parts {
        let cost = estimate_tokens(&p.text) + 12;
        match groups.last_mut() {
            Some(g) if used + cost <= budget || g.is_empty() => {
                g.push(p.clone());
                used += cost;
            }
            _ => {
                groups.push(vec![p.clone()]);
                used = cost + 120;
            }
        }
    }
    groups
}

/// A sentence of running text: 20–400 characters, mostly letters, ending like a sentence,
/// with some content (not a table row, a line of code or a figure's labels).
fn prose(s: &str) -> bool {
    let (nums, plain) = crate::rag::cited_in(s);
    let s = if nums.is_empty() { s } else { plain.as_str() };
    let n = s.chars().count();
    let letters = s.chars().filter(|c| c.is_alphabetic() || *c == ' ').count();
    (20..=400).contains(&n)
        && !crate::rag::degenerate(s)
        && letters * 10 >= n * 8
        && s.trim_end().ends_with(['.', '。', '!', '?', '！', '？'])
        && terms(s).len() >= 3
}

/// An extract standing for a part the model could not summarise: its `max` most central
/// prose sentences (most of the part's frequent terms), in document order. Lines of tables,
/// code and figure labels are not prose and are passed over.
pub fn lead_sentences(text: &str, max: usize) -> String {
    let mut seen = std::collections::HashSet::new();
    let all: Vec<&str> = sentences(text)
        .into_iter()
        .filter(|s| seen.insert(sentence_key(s)))
        .collect();
    let mut freq: std::collections::HashMap<String, usize> = Default::default();
    for s in &all {
        for t in terms(s) {
            *freq.entry(t).or_default() += 1;
        }
    }
    let mut scored: Vec<(usize, f32)> = all
        .iter()
        .enumerate()
        .filter(|(_, s)| prose(s))
        .map(|(i, s)| {
            let t = terms(s);
            let score = t.iter().map(|w| freq[w] as f32).sum::<f32>() / (t.len() as f32).sqrt();
            (i, score)
        })
        .collect();
    if scored.is_empty() {
        // No prose at all: the start of the text, cut at a word.
        let cut: String = text.chars().take(200).collect();
        return cut.trim().to_owned();
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut pick: Vec<usize> = scored.iter().take(max).map(|(i, _)| *i).collect();
    pick.sort_unstable();
    pick.iter()
        .map(|i| all[*i].trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a model's summary is usable: some content terms and not mostly a copy of the
/// prompt's instructions.
pub fn usable(summary: &str) -> bool {
    terms(summary).len() >= 3 && summary.chars().count() >= 20
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn chunk(ord: u32, page: u32, section: &str, text: &str, refs: bool) -> ChunkRecord {
        ChunkRecord {
            id: format!("c{ord}"),
            document_id: Uuid::nil(),
            project_id: Uuid::nil(),
            ord,
            text: text.into(),
            page_start: page,
            page_end: page,
            char_start: 0,
            char_end: 0,
            section_path: section.into(),
            language: "en".into(),
            is_references: refs,
            content_hash: String::new(),
        }
    }

    #[test]
    fn parts_follow_sections_and_the_budget_and_skip_references() {
        let long = "word ".repeat(300); // ~375 tokens
        let chunks = vec![
            chunk(0, 1, "1 Introduction", &long, false),
            chunk(1, 2, "1 Introduction > 1.1 Scope", &long, false),
            chunk(2, 3, "2 Methods", &long, false),
            chunk(3, 4, "2 Methods", &long, false),
            chunk(4, 5, "2 Methods", &long, false),
            chunk(5, 6, "References", "A. Author. A paper. 2001.", true),
        ];
        let p = parts(&chunks, 1200);
        let spans: Vec<(u32, u32)> = p.iter().map(|p| (p.page_start, p.page_end)).collect();
        // A new top-level section starts a new part once the current one is half full; the
        // budget splits the rest; the references are left out.
        assert_eq!(spans, [(1, 2), (3, 5)]);
        assert_eq!(p[1].n, 2);
        assert!(p.iter().all(|p| estimate_tokens(&p.text) <= 1200));
        assert!(!p.iter().any(|p| p.text.contains("A paper")));
        let small = parts(&chunks, 400);
        assert_eq!(small.len(), 5);
        // Only references: they are what there is.
        assert_eq!(parts(&chunks[5..], 1000).len(), 1);
    }

    #[test]
    fn reduce_groups_fit_the_budget_and_prompts_number_the_parts() {
        let part = |n: usize| Part {
            n,
            section: String::new(),
            page_start: n as u32,
            page_end: n as u32 + 1,
            text: "a summary sentence with words ".repeat(10),
        };
        let all: Vec<Part> = (1..=6).map(part).collect();
        let groups = reduce_groups(&all, 200);
        assert!(groups.len() > 1);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 6);
        let m = reduce_prompt("Paper", &all[..2], Lang::En, Template::Chat);
        assert!(m[1].content.contains("[2] (pp. 2–3) a summary"));
        let j = map_prompt("論文", &all[0], Lang::Ja, Template::Completion);
        assert!(
            j[0].content.ends_with("words \n要約:") || j[0].content.ends_with("words\n要約:"),
            "{}",
            j[0].content
        );
        let source = "The sandwich package computes robust covariance matrix estimators for regression models.";
        assert_eq!(
            clean_map(
                "Robust covariance matrix estimators are computed. Robust covariance matrix estimators are computed! The weather is lovely today in Paris.",
                source,
                0.5
            )
            .as_deref(),
            Some("Robust covariance matrix estimators are computed.")
        );
        let ps = vec![Part {
            text: source.into(),
            ..all[0].clone()
        }];
        assert_eq!(
            clean_reduce("It computes robust covariance estimators [1]. Cats sleep all day [1]. Nothing cited here.", &ps, 0.5).as_deref(),
            Some("It computes robust covariance estimators [1].")
        );
        assert_eq!(
            lead_sentences(
                "Short. This sentence carries several content words here. Another one follows with more content.",
                1
            ),
            "This sentence carries several content words here."
        );
        assert!(!usable("ok"));
    }
}
