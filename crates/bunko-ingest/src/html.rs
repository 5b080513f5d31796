//! HTML to text: the main content only. Scripts, styles, navigation, headers, footers, asides,
//! forms and hidden templates are dropped; `<main>` or `<article>` is preferred when present;
//! block elements become line breaks and headings become Markdown headings (so the chunker
//! sees the structure); entities are decoded.

/// Elements whose content is never text a reader came for.
const SKIP: &[&str] = &[
    "script", "style", "nav", "header", "footer", "aside", "noscript", "form", "svg", "template",
    "iframe", "button", "select", "object", "canvas", "head",
];
const BLOCK: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "br",
    "li",
    "ul",
    "ol",
    "table",
    "tr",
    "td",
    "th",
    "blockquote",
    "pre",
    "dd",
    "dt",
    "dl",
    "figure",
    "figcaption",
    "hr",
    "address",
    "body",
];

struct Tag<'a> {
    name: String,
    closing: bool,
    self_closing: bool,
    raw: &'a str,
}

/// Splits into text runs and tags.
enum Piece<'a> {
    Text(&'a str),
    Tag(Tag<'a>),
}

fn pieces(html: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        if lt > 0 {
            out.push(Piece::Text(&rest[..lt]));
        }
        let after = &rest[lt..];
        if after.starts_with("<!--") {
            rest = after.find("-->").map_or("", |e| &after[e + 3..]);
            continue;
        }
        let Some(gt) = after.find('>') else {
            out.push(Piece::Text(after));
            rest = "";
            break;
        };
        let raw = &after[1..gt];
        let closing = raw.starts_with('/');
        let name: String = raw
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        out.push(Piece::Tag(Tag {
            self_closing: raw.ends_with('/'),
            name,
            closing,
            raw,
        }));
        rest = &after[gt + 1..];
        // Raw-text elements: skip to their end tag without parsing their content.
        if !closing
            && let Some(Piece::Tag(t)) = out.last()
            && (t.name == "script" || t.name == "style")
        {
            let end = format!("</{}", t.name);
            let lower = rest.to_ascii_lowercase();
            let at = lower.find(&end).unwrap_or(rest.len());
            rest = &rest[at..];
        }
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    out
}

fn attr<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    let lower = raw.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))?;
    let v = &raw[at + name.len() + 1..];
    let q = v.chars().next()?;
    if q == '"' || q == '\'' {
        let end = v[1..].find(q)?;
        Some(&v[1..1 + end])
    } else {
        Some(
            v.split(|c: char| c.is_whitespace() || c == '>')
                .next()
                .unwrap_or(""),
        )
    }
}

/// Renders the pieces between `from` and `to` as text.
fn render(p: &[Piece<'_>]) -> String {
    let mut out = String::new();
    let mut skip_depth = 0usize;
    let mut heading: Option<usize> = None;
    let mut pre = 0usize;
    for piece in p {
        match piece {
            Piece::Tag(t) => {
                let hidden = !t.closing
                    && (attr(t.raw, "hidden").is_some()
                        || t.raw.to_ascii_lowercase().contains("aria-hidden=\"true\"")
                        || attr(t.raw, "role").is_some_and(|r| r == "navigation"));
                if SKIP.contains(&t.name.as_str()) || (hidden && skip_depth > 0) {
                    if t.closing {
                        skip_depth = skip_depth.saturating_sub(1);
                    } else if !t.self_closing {
                        skip_depth += 1;
                    }
                    continue;
                }
                if skip_depth > 0 {
                    continue;
                }
                let level = match t.name.as_str() {
                    "h1" => Some(1),
                    "h2" => Some(2),
                    "h3" => Some(3),
                    "h4" => Some(4),
                    "h5" => Some(5),
                    "h6" => Some(6),
                    _ => None,
                };
                if let Some(l) = level {
                    out.push_str("\n\n");
                    if !t.closing {
                        out.push_str(&"#".repeat(l));
                        out.push(' ');
                        heading = Some(l);
                    } else {
                        heading = None;
                    }
                } else if t.name == "pre" {
                    pre = if t.closing {
                        pre.saturating_sub(1)
                    } else {
                        pre + 1
                    };
                    out.push_str("\n\n");
                } else if t.name == "p" || t.name == "table" || t.name == "blockquote" {
                    out.push_str("\n\n");
                } else if t.name == "li" {
                    if !t.closing {
                        out.push_str("\n- ");
                    }
                } else if BLOCK.contains(&t.name.as_str()) {
                    out.push('\n');
                } else if t.name == "td" || t.name == "th" {
                    out.push(' ');
                }
            }
            Piece::Text(s) => {
                if skip_depth > 0 {
                    continue;
                }
                let text = decode_entities(s);
                if pre > 0 {
                    out.push_str(&text);
                } else {
                    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    if !collapsed.is_empty() {
                        if text.starts_with(char::is_whitespace) && !out.ends_with([' ', '\n']) {
                            out.push(' ');
                        }
                        out.push_str(&collapsed);
                        if text.ends_with(char::is_whitespace) {
                            out.push(' ');
                        }
                    }
                }
                let _ = heading;
            }
        }
    }
    // Tidy: trim lines, at most one blank line in a row.
    let mut tidy = String::new();
    let mut blank = 0;
    for line in out.lines().map(str::trim) {
        if line.is_empty() || line == "-" {
            blank += 1;
            continue;
        }
        if !tidy.is_empty() {
            tidy.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        tidy.push_str(line);
    }
    tidy
}

/// Returns the main text and the title (`<title>`, else the first `<h1>`).
pub fn html_to_text(html: &str) -> (String, Option<String>) {
    let ps = pieces(html);
    let title = text_of_first(&ps, "title").or_else(|| text_of_first(&ps, "h1"));
    // Prefer <main>, then <article>: the page's own content.
    let body = ["main", "article"]
        .iter()
        .find_map(|name| {
            let start = ps
                .iter()
                .position(|p| matches!(p, Piece::Tag(t) if !t.closing && t.name == *name))?;
            let end = ps
                .iter()
                .rposition(|p| matches!(p, Piece::Tag(t) if t.closing && t.name == *name))?;
            (end > start).then(|| render(&ps[start..=end]))
        })
        .filter(|t| !t.trim().is_empty());
    (body.unwrap_or_else(|| render(&ps)), title)
}

fn text_of_first(ps: &[Piece<'_>], name: &str) -> Option<String> {
    let start = ps
        .iter()
        .position(|p| matches!(p, Piece::Tag(t) if !t.closing && t.name == name))?;
    let mut s = String::new();
    for p in &ps[start + 1..] {
        match p {
            Piece::Text(t) => s.push_str(t),
            Piece::Tag(t) if t.closing && t.name == name => break,
            Piece::Tag(_) => {}
        }
    }
    let t = decode_entities(&s)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!t.is_empty()).then_some(t)
}

/// Decodes character references: numeric (`&#12354;`, `&#x3042;`) and the common named ones.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let end = after.find(';').filter(|e| *e <= 10);
        let decoded = end.and_then(|e| {
            let name = &after[..e];
            let c = if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
            } else if let Some(dec) = name.strip_prefix('#') {
                dec.parse::<u32>().ok().and_then(char::from_u32)
            } else {
                match name {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    "nbsp" => Some(' '),
                    "copy" => Some('©'),
                    "reg" => Some('®'),
                    "mdash" => Some('—'),
                    "ndash" => Some('–'),
                    "hellip" => Some('…'),
                    "laquo" => Some('«'),
                    "raquo" => Some('»'),
                    "ldquo" => Some('“'),
                    "rdquo" => Some('”'),
                    "lsquo" => Some('‘'),
                    "rsquo" => Some('’'),
                    "times" => Some('×'),
                    "yen" => Some('¥'),
                    "euro" => Some('€'),
                    "middot" => Some('·'),
                    _ => None,
                }
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &after[e + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_content_without_scripts_or_navigation() {
        let html = r#"<!doctype html><html><head><title>Report &amp; notes</title>
<style>body { color: red }</style><script>var x = "<p>not text</p>";</script></head>
<body><nav><a href="/">Home</a> <a href="/x">Menu item</a></nav>
<header>Site banner</header>
<main><h1>Heading one</h1><p>First paragraph with <b>bold</b> text &#x3042;&#12354;.</p>
<ul><li>item one</li><li>item two</li></ul><h2>Sub</h2><p>日本語の段落。</p></main>
<footer>Copyright</footer><script>alert(1)</script></body></html>"#;
        let (text, title) = html_to_text(html);
        assert_eq!(title.as_deref(), Some("Report & notes"));
        assert!(text.starts_with("# Heading one"), "{text}");
        assert!(
            text.contains("First paragraph with bold text ああ."),
            "{text}"
        );
        assert!(text.contains("- item one\n- item two"), "{text}");
        assert!(text.contains("## Sub\n\n日本語の段落。"), "{text}");
        for bad in [
            "not text",
            "Home",
            "Menu item",
            "Site banner",
            "Copyright",
            "alert",
            "color",
        ] {
            assert!(!text.contains(bad), "{bad} leaked: {text}");
        }
    }

    #[test]
    fn without_main_the_body_minus_chrome() {
        let (text, title) =
            html_to_text("<p>Hello<br>world</p><aside>ad</aside><!-- c <p>x</p> -->");
        assert_eq!(text, "Hello\nworld");
        assert_eq!(title, None);
        assert_eq!(decode_entities("a &lt; b &bogus; &"), "a < b &bogus; &");
    }
}
