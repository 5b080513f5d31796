//! Text normalisation shared by ingestion and search: NFKC (full/half width, compatibility
//! ideographs, Kangxi radicals), the CJK radicals supplement folded to unified ideographs,
//! control characters dropped, English end-of-line hyphenation joined and the lines of a
//! paragraph joined — with an offset map that keeps every output character traceable to its
//! position in the extractor's text (citations need it).

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::canonical_combining_class;

/// Han ideographs, kana and the iteration mark: the scripts written without spaces.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF        // hiragana, katakana (incl. ー)
        | 0x31F0..=0x31FF      // katakana phonetic extensions
        | 0x3400..=0x4DBF      // CJK extension A
        | 0x4E00..=0x9FFF      // CJK unified ideographs
        | 0xF900..=0xFAFF      // compatibility ideographs
        | 0xFF66..=0xFF9F      // half-width katakana
        | 0x20000..=0x2FA1F)   // extensions B.. and compatibility supplement
        || c == '々'
}

/// CJK punctuation that sits between ideographs without spaces (、。「」 etc.).
fn is_cjk_punct(c: char) -> bool {
    matches!(c as u32, 0x3001..=0x303F | 0xFF01..=0xFF0F | 0xFF1A..=0xFF20 | 0x30FB)
}

fn is_cjkish(c: char) -> bool {
    is_cjk(c) || is_cjk_punct(c)
}

/// The CJK Radicals Supplement (U+2E80–U+2EFF) has no Unicode decomposition; PDFs made with
/// some fonts emit these instead of the ideograph (the "⻑" for "長" class of bug).
fn fold_radical(c: char) -> char {
    match c {
        '⺃' => '乚',
        '⺅' => '亻',
        '⺇' => '几',
        '⺉' => '刂',
        '⺋' => '㔾',
        '⺎' => '兀',
        '⺏' => '尣',
        '⺐' => '尢',
        '⺓' => '幺',
        '⺔' => '彑',
        '⺖' => '忄',
        '⺘' => '扌',
        '⺙' => '攵',
        '⺛' => '旡',
        '⺟' => '母',
        '⺠' => '民',
        '⺡' => '氵',
        '⺢' => '氺',
        '⺣' => '灬',
        '⺤' => '爫',
        '⺦' => '丬',
        '⺨' => '犭',
        '⺩' => '王',
        '⺪' => '疋',
        '⺫' => '罒',
        '⺬' => '示',
        '⺭' => '礻',
        '⺮' => '竹',
        '⺲' => '罒',
        '⺳' => '网',
        '⺶' => '羊',
        '⺷' => '羊',
        '⺹' => '耂',
        '⺺' => '肀',
        '⺼' => '月',
        '⺾' => '艹',
        '⺿' => '艹',
        '⻀' => '艹',
        '⻁' => '虎',
        '⻂' => '衤',
        '⻃' => '覀',
        '⻄' => '西',
        '⻅' => '见',
        '⻆' => '角',
        '⻇' => '角',
        '⻈' => '讠',
        '⻉' => '贝',
        '⻊' => '足',
        '⻋' => '车',
        '⻌' => '辶',
        '⻍' => '辶',
        '⻎' => '辶',
        '⻏' => '阝',
        '⻐' => '钅',
        '⻑' => '長',
        '⻒' => '镸',
        '⻓' => '长',
        '⻔' => '门',
        '⻖' => '阝',
        '⻘' => '青',
        '⻙' => '韦',
        '⻚' => '页',
        '⻛' => '风',
        '⻜' => '飞',
        '⻝' => '食',
        '⻟' => '食',
        '⻠' => '饣',
        '⻡' => '𠂉',
        '⻢' => '马',
        '⻣' => '骨',
        '⻤' => '鬼',
        '⻥' => '鱼',
        '⻦' => '鸟',
        '⻧' => '卤',
        '⻨' => '麦',
        '⻩' => '黄',
        '⻪' => '黾',
        '⻫' => '斉',
        '⻬' => '齐',
        '⻭' => '歯',
        '⻮' => '齿',
        '⻯' => '竜',
        '⻰' => '龙',
        '⻱' => '龜',
        '⻲' => '亀',
        '⻳' => '龟',
        _ => c,
    }
}

/// Characters that attach to the one before: combining marks and the (combining) kana voicing
/// marks, so that "か" + "゙" becomes "が".
fn attaches(c: char) -> bool {
    canonical_combining_class(c) != 0
        || matches!(c, '\u{3099}' | '\u{309A}' | '\u{FF9E}' | '\u{FF9F}')
}

/// Normalised text with, for each of its characters, the index (in characters) of the source
/// character it came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Normalised {
    pub text: String,
    pub map: Vec<u32>,
}

impl Normalised {
    fn push(&mut self, c: char, src: u32) {
        self.text.push(c);
        self.map.push(src);
    }

    /// The map in compact form: `(normalised index, source index)` wherever the source index
    /// does not simply follow the previous one (what is stored with each page).
    pub fn breakpoints(&self) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for (i, &src) in self.map.iter().enumerate() {
            if i == 0 || self.map[i - 1] + 1 != src {
                out.push((i as u32, src));
            }
        }
        out
    }
}

/// The source (extractor's text) character index of normalised character `i`, from the
/// breakpoints of [`Normalised::breakpoints`].
pub fn source_index(breakpoints: &[(u32, u32)], i: u32) -> Option<u32> {
    let at = breakpoints.partition_point(|(n, _)| *n <= i);
    let (n, src) = *breakpoints.get(at.checked_sub(1)?)?;
    Some(src + (i - n))
}

/// Step 1: NFKC by grapheme-ish cluster (a base character and what attaches to it), radicals
/// folded, controls dropped, `\r\n`/`\r` → `\n`, form feed → blank line, tabs and other spaces
/// → one space.
fn normalise_chars(raw: &str) -> Vec<(char, u32)> {
    let chars: Vec<char> = raw.chars().collect();
    let mut out: Vec<(char, u32)> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        let c = chars[i];
        i += 1;
        match c {
            '\r' => {
                if chars.get(i) == Some(&'\n') {
                    i += 1;
                }
                out.push(('\n', start as u32));
                continue;
            }
            '\n' => {
                out.push(('\n', start as u32));
                continue;
            }
            '\u{0c}' => {
                out.push(('\n', start as u32));
                out.push(('\n', start as u32));
                continue;
            }
            '\u{00AD}' | '\u{200B}' | '\u{FEFF}' | '\u{200C}' | '\u{200D}' => continue,
            _ => {}
        }
        if c.is_control() {
            if c == '\t' {
                out.push((' ', start as u32));
            }
            continue;
        }
        while i < chars.len() && attaches(chars[i]) {
            i += 1;
        }
        // Fast path: a lone character NFKC leaves as it is (all printable ASCII, most kana
        // and ideographs) is copied without building a string.
        if i == start + 1
            && (c.is_ascii()
                || unicode_normalization::is_nfkc_quick(std::iter::once(c))
                    == unicode_normalization::IsNormalized::Yes)
        {
            let n = fold_radical(c);
            out.push((if n.is_whitespace() { ' ' } else { n }, start as u32));
            continue;
        }
        let cluster: String = chars[start..i].iter().collect();
        for n in cluster.nfkc() {
            let n = fold_radical(n);
            let n = if n.is_whitespace() { ' ' } else { n };
            if n.is_control() {
                continue;
            }
            out.push((n, start as u32));
        }
    }
    out
}

type Line = Vec<(char, u32)>;

/// Trims a line, collapses runs of spaces, and drops spaces between two CJK characters (OCR
/// and some PDFs space every ideograph).
fn tidy_line(line: &[(char, u32)]) -> Line {
    let mut out: Line = Vec::with_capacity(line.len());
    let mut pending_space: Option<u32> = None;
    for &(c, s) in line {
        if c == ' ' {
            if !out.is_empty() && pending_space.is_none() {
                pending_space = Some(s);
            }
            continue;
        }
        if let Some(ps) = pending_space.take() {
            let prev = out.last().map(|p| p.0).unwrap_or(' ');
            if !(is_cjkish(prev) && is_cjkish(c)) || is_item_marker(&out) {
                out.push((' ', ps));
            }
        }
        out.push((c, s));
    }
    out
}

/// The line so far is a law's article token or an item number (`第一条`, `一`): the space
/// after it separates the marker from the text and stays.
fn is_item_marker(line: &[(char, u32)]) -> bool {
    let s: String = line.iter().map(|(c, _)| *c).collect();
    s.chars().all(is_kanji_numeral)
        || law_heading(&s).is_some_and(|(_, token)| token == s)
        || s == "附則"
}

/// Display width: ideographs count twice, so Japanese and English lines compare.
fn width(line: &[(char, u32)]) -> usize {
    line.iter()
        .map(|(c, _)| if is_cjkish(*c) { 2 } else { 1 })
        .sum()
}

/// Does this line start something of its own (a heading, a list item, a law's article,
/// paragraph or item)? Then the line break before it stays.
pub fn starts_block(line: &str) -> bool {
    let t = line.trim_start();
    let mut chars = t.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if matches!(
        first,
        '•' | '・' | '●' | '○' | '■' | '□' | '◆' | '※' | '#' | '>' | '|'
    ) {
        return true;
    }
    if (first == '-' || first == '*' || first == '+') && chars.next() == Some(' ') {
        return true;
    }
    if t.starts_with('第') && law_heading(t).is_some() {
        return true;
    }
    if t.starts_with("附則") {
        return true;
    }
    // "1. ", "2) ", "(3) ", "1.2 ", "一 " (a law's item), "2 " (a law's paragraph).
    let digits: String = t
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    if !digits.is_empty() {
        let rest = &t[digits.len()..];
        return rest.starts_with(' ') || rest.starts_with(") ");
    }
    if first == '(' {
        let inner: String = t[1..].chars().take_while(|c| *c != ')').collect();
        return !inner.is_empty()
            && inner.chars().count() <= 3
            && inner.chars().all(|c| c.is_alphanumeric());
    }
    let kanji: String = t.chars().take_while(|c| is_kanji_numeral(*c)).collect();
    !kanji.is_empty() && t[kanji.len()..].starts_with(' ')
}

/// A Markdown code fence line (```` ``` ```` or `~~~`, with an optional language).
pub fn is_fence(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("```") || t.starts_with("~~~")
}

pub fn is_kanji_numeral(c: char) -> bool {
    matches!(
        c,
        '一' | '二' | '三' | '四' | '五' | '六' | '七' | '八' | '九' | '十' | '百' | '千' | '〇'
    )
}

/// `第…編/章/節/款/目/条` at the start of a line: (level, the heading token, e.g. "第十二条").
/// Article numbers may carry a branch (`第十二条の二`).
pub fn law_heading(line: &str) -> Option<(u8, String)> {
    let t = line.trim_start();
    let rest = t.strip_prefix('第')?;
    let num: String = rest
        .chars()
        .take_while(|c| is_kanji_numeral(*c) || c.is_ascii_digit())
        .collect();
    if num.is_empty() {
        return None;
    }
    let after = &rest[num.len()..];
    let unit = after.chars().next()?;
    let level = match unit {
        '編' => 1,
        '章' => 2,
        '節' => 3,
        '款' => 4,
        '目' => 5,
        '条' => 6,
        _ => return None,
    };
    let mut token = format!("第{num}{unit}");
    let mut tail = &after[unit.len_utf8()..];
    // 第十二条の二 (a branch number).
    while let Some(r) = tail.strip_prefix('の') {
        let branch: String = r
            .chars()
            .take_while(|c| is_kanji_numeral(*c) || c.is_ascii_digit())
            .collect();
        if branch.is_empty() {
            break;
        }
        token.push('の');
        token.push_str(&branch);
        tail = &r[branch.len()..];
    }
    // "第3条件" is prose, not a heading: the token must end the line or be followed by a space
    // or the heading's caption.
    match tail.chars().next() {
        None | Some(' ') | Some('(') | Some('「') => Some((level, token)),
        Some(_) if level < 6 => Some((level, token)),
        _ => None,
    }
}

/// Normalises one page of extracted text.
pub fn normalise(raw: &str) -> Normalised {
    let chars = normalise_chars(raw);
    let lines: Vec<Line> = chars.split(|(c, _)| *c == '\n').map(tidy_line).collect();
    // A "full" line reaches near the usual right margin: the 80th percentile of widths.
    let mut widths: Vec<usize> = lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| width(l))
        .collect();
    widths.sort_unstable();
    let full = widths
        .get(widths.len().saturating_mul(8) / 10)
        .copied()
        .unwrap_or(0);
    let mut out = Normalised::default();
    let mut prev_blank = true;
    let mut in_fence = false;
    for (i, line) in lines.iter().enumerate() {
        let fence = |l: &Line| is_fence(&l.iter().take(3).map(|(c, _)| *c).collect::<String>());
        if fence(line) {
            in_fence = !in_fence;
        }
        if line.is_empty() {
            if !prev_blank && !out.text.is_empty() {
                // Paragraph break: end the paragraph's line and add one blank line.
                let src = out.map.last().copied().unwrap_or(0);
                if !out.text.ends_with('\n') {
                    out.push('\n', src);
                }
                out.push('\n', src);
            }
            prev_blank = true;
            continue;
        }
        for &(c, s) in line {
            out.push(c, s);
        }
        prev_blank = false;
        // Decide how this line meets the next.
        let Some(next) = lines.get(i + 1) else {
            continue;
        };
        if next.is_empty() {
            continue;
        }
        let next_text: String = next.iter().map(|(c, _)| *c).collect();
        let last = line.last().map(|p| p.0).unwrap_or(' ');
        let before_last = line.iter().rev().nth(1).map(|p| p.0).unwrap_or(' ');
        let next_first = next_text.chars().next().unwrap_or(' ');
        let this_full = width(line) * 10 >= full * 7 && widths.len() >= 3;
        let src = line.last().map(|p| p.1).unwrap_or(0);
        // Code keeps its lines, and so do the fence lines around it.
        let block = starts_block(&next_text) || in_fence || fence(line) || fence(next);
        if !block && last == '-' && before_last.is_alphabetic() && next_first.is_lowercase() {
            // "exam-" + "ple": drop the hyphen, join without a space.
            out.text.pop();
            out.map.pop();
            continue;
        }
        if block || !this_full {
            out.push('\n', src);
            continue;
        }
        if is_cjkish(last) || is_cjkish(next_first) {
            continue;
        }
        out.push(' ', src);
    }
    while out.text.ends_with('\n') {
        out.text.pop();
        out.map.pop();
    }
    out
}

/// The language of a stretch of text: `ja` when kana or ideographs make up a fair share of its
/// letters, `en` when it is Latin script with English function words, else `other`.
pub fn detect_language(text: &str) -> &'static str {
    let mut cjk = 0usize;
    let mut kana = 0usize;
    let mut latin = 0usize;
    let mut letters = 0usize;
    for c in text.chars() {
        if is_cjk(c) {
            cjk += 1;
            if matches!(c as u32, 0x3040..=0x30FF) {
                kana += 1;
            }
            letters += 1;
        } else if c.is_alphabetic() {
            letters += 1;
            if c.is_ascii_alphabetic() {
                latin += 1;
            }
        }
    }
    if letters == 0 {
        return "other";
    }
    if cjk * 5 >= letters && (kana > 0 || cjk * 2 >= letters) {
        return "ja";
    }
    if latin * 2 >= letters {
        const STOP: &[&str] = &[
            "the", "of", "and", "to", "in", "is", "that", "for", "a", "with", "on", "as", "are",
            "by", "be", "this", "we", "it", "an", "or", "from",
        ];
        let words: Vec<String> = text
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| !w.is_empty())
            .take(400)
            .map(str::to_ascii_lowercase)
            .collect();
        let stop = words.iter().filter(|w| STOP.contains(&w.as_str())).count();
        if words.len() < 8 || stop * 12 >= words.len() {
            return "en";
        }
    }
    "other"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalise(s).text
    }

    #[test]
    fn width_and_compatibility_forms_fold() {
        assert_eq!(n("ＡＢＣ１２３ ｶﾀｶﾅ"), "ABC123 カタカナ");
        // Compatibility ideograph U+F9DC (隆) and Kangxi radical U+2F00 (一) → unified.
        assert_eq!(n("\u{F9DC}\u{2F00}"), "隆一");
        // Radicals supplement: ⻑ → 長.
        assert_eq!(n("⻑野"), "長野");
        // Decomposed voicing mark composes.
        assert_eq!(n("か\u{3099}"), "が");
        assert_eq!(n("①"), "1");
    }

    #[test]
    fn paragraph_lines_join_and_hyphens_mend() {
        let raw = "This is a long line of text that runs to the margin and\n\
                   continues here with more words that also reach the margin, a\n\
                   hyphen-\nated word and the end.\n\nNext paragraph.";
        let out = n(raw);
        assert!(out.contains("margin and continues here"), "{out}");
        assert!(out.contains("hyphenated word"), "{out}");
        assert!(out.contains("\n\nNext paragraph."), "{out}");
    }

    #[test]
    fn japanese_lines_join_without_spaces_and_blocks_stay() {
        let raw = "第一条　この法律は、国民の健康の保持増進に資することを目的とする。この法律は\n\
                   、次に掲げる事項について定めるものとする。ここまでが一つの段落である。\n\
                   ２　前項の規定は、次に掲げる場合には適用しない。\n\
                   一　国の機関\n二　地方公共団体";
        let out = n(raw);
        assert!(out.contains("この法律は、次に"), "{out}");
        assert!(out.contains("\n2 前項"), "{out}");
        assert!(out.contains("\n一 国の機関\n二 地方公共団体"), "{out}");
        // Spaces between ideographs (OCR) go.
        assert_eq!(n("日 本 語 の 文"), "日本語の文");
    }

    #[test]
    fn every_output_char_maps_to_its_source() {
        let raw = "ＡＢ\r\nｶﾞ\u{0}x\tか\u{3099}";
        let out = normalise(raw);
        assert_eq!(out.text.chars().count(), out.map.len());
        let src: Vec<char> = raw.chars().collect();
        for (c, &m) in out.text.chars().zip(&out.map) {
            assert!((m as usize) < src.len());
            if c.is_alphanumeric() {
                let from: String = src[m as usize..].iter().take(2).collect();
                let folded: String = from.nfkc().collect();
                assert!(folded.contains(c), "{c} from {from:?}");
            }
        }
    }

    #[test]
    fn breakpoints_reproduce_the_map() {
        for raw in [
            "ＡＢ\r\nｶﾞ x\tか\u{3099} plain text here",
            "exam-\nple words and more words to make a full line of text here\nnext",
            "日 本 語 の 文",
            "",
        ] {
            let n = normalise(raw);
            let bp = n.breakpoints();
            for (i, &src) in n.map.iter().enumerate() {
                assert_eq!(source_index(&bp, i as u32), Some(src), "{raw:?} at {i}");
            }
            assert!(bp.len() <= n.map.len());
        }
        let plain = normalise("plain ascii text stays one to one");
        assert_eq!(plain.breakpoints(), vec![(0, 0)]);
    }

    #[test]
    fn languages() {
        assert_eq!(detect_language("これは日本語の文章です。"), "ja");
        assert_eq!(detect_language("東京都千代田区"), "ja");
        assert_eq!(
            detect_language("The cat sat on the mat and looked at the dog in the yard."),
            "en"
        );
        assert_eq!(
            detect_language("Le chat est assis sur le tapis et regarde le chien dans la cour."),
            "other"
        );
        assert_eq!(detect_language("12345 !!!"), "other");
    }

    #[test]
    fn law_headings() {
        assert_eq!(law_heading("第十二条 内容"), Some((6, "第十二条".into())));
        assert_eq!(
            law_heading("第十二条の二"),
            Some((6, "第十二条の二".into()))
        );
        assert_eq!(law_heading("第三章 総則"), Some((2, "第三章".into())));
        assert_eq!(law_heading("第3条件として"), None);
        assert_eq!(law_heading("第一"), None);
    }
}
