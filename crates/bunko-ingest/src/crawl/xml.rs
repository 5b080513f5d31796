//! A small element tree over quick-xml for the feeds and APIs the crawlers read. Names are
//! local (namespace prefixes dropped: `arxiv:doi` is `doi`); entity references are resolved
//! for XML's five and numeric ones, any other is kept as written (no DTD is ever read, so no
//! entity expansion attack). The bytes are transcoded first: a BOM, else the declaration's
//! `encoding` (Shift_JIS and EUC-JP are common in Japanese government feeds), else UTF-8.

use quick_xml::events::Event;

const MAX_DEPTH: usize = 200;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    El(Element),
    Text(String),
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::El(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.elements().filter(move |e| e.name == name)
    }

    pub fn child(&self, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == name)
    }

    /// All text inside, in document order.
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.collect_text(&mut out);
        out
    }

    fn collect_text(&self, out: &mut String) {
        for n in &self.children {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::El(e) => e.collect_text(out),
            }
        }
    }

    /// The trimmed text of the first child `name`, with white space runs folded; `None`
    /// when absent or blank.
    pub fn child_text(&self, name: &str) -> Option<String> {
        self.child(name)
            .map(|e| fold_space(&e.text()))
            .filter(|s| !s.is_empty())
    }
}

/// White space runs (line breaks of wrapped titles) as one space, trimmed.
pub fn fold_space(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The bytes as UTF-8: BOM, else the XML declaration's encoding, else UTF-8 (invalid
/// sequences are an error, not silently replaced).
pub fn transcode(bytes: &[u8]) -> Result<String, String> {
    if let Some((enc, bom)) = encoding_rs::Encoding::for_bom(bytes) {
        return Ok(enc
            .decode_without_bom_handling(&bytes[bom..])
            .0
            .into_owned());
    }
    let head = &bytes[..bytes.len().min(200)];
    if let Some(label) = declared_encoding(head) {
        let Some(enc) = encoding_rs::Encoding::for_label(label.as_bytes()) else {
            return Err(format!("unknown encoding `{label}` in the XML declaration"));
        };
        if enc != encoding_rs::UTF_8 {
            let (text, _, bad) = enc.decode(bytes);
            if bad {
                return Err(format!("the bytes are not valid {}", enc.name()));
            }
            return Ok(text.into_owned());
        }
    }
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        format!(
            "not valid UTF-8 at byte {} and no other encoding declared",
            e.utf8_error().valid_up_to()
        )
    })
}

fn declared_encoding(head: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(head);
    let decl = s.strip_prefix("<?xml")?;
    let decl = &decl[..decl.find("?>")?];
    let i = decl.find("encoding")?;
    let rest = decl[i + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &rest[1..];
    Some(rest[..rest.find(quote)?].to_owned())
}

fn local(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match name.rsplit_once(':') {
        Some((_, l)) => l.to_owned(),
        None => name.into_owned(),
    }
}

fn element(e: &quick_xml::events::BytesStart<'_>) -> Result<Element, String> {
    let mut attrs = Vec::new();
    for a in e.attributes().with_checks(false) {
        let a = a.map_err(|e| e.to_string())?;
        let v = a
            .unescape_value()
            .map(|v| v.into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(&a.value).into_owned());
        attrs.push((local(a.key.as_ref()), v));
    }
    Ok(Element {
        name: local(e.name().as_ref()),
        attrs,
        children: Vec::new(),
    })
}

/// Parses a whole document into its root element.
pub fn parse(bytes: &[u8]) -> Result<Element, String> {
    let text = transcode(bytes)?;
    let mut reader = quick_xml::Reader::from_str(&text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let push_text = |stack: &mut Vec<Element>, t: String| {
        if let Some(top) = stack.last_mut() {
            match top.children.last_mut() {
                Some(Node::Text(prev)) => prev.push_str(&t),
                _ => top.children.push(Node::Text(t)),
            }
        }
    };
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("malformed XML at byte {}: {e}", reader.buffer_position()))?;
        match ev {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("XML nested deeper than {MAX_DEPTH} elements"));
                }
                if root.is_some() {
                    return Err("XML has content after its root element".into());
                }
                stack.push(element(&e)?);
            }
            Event::Empty(e) => {
                let el = element(&e)?;
                match stack.last_mut() {
                    Some(top) => top.children.push(Node::El(el)),
                    None if root.is_none() => root = Some(el),
                    None => return Err("XML has content after its root element".into()),
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or("unbalanced end tag")?;
                match stack.last_mut() {
                    Some(top) => top.children.push(Node::El(el)),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| e.to_string())?;
                push_text(&mut stack, s.into_owned());
            }
            Event::CData(t) => {
                let s = t.decode().map_err(|e| e.to_string())?;
                push_text(&mut stack, s.into_owned());
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = r.decode().map_err(|e| e.to_string())?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .map(str::to_owned)
                            .unwrap_or_else(|| format!("&{name};"))
                    }
                    Err(e) => return Err(format!("bad character reference: {e}")),
                };
                push_text(&mut stack, resolved);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(format!(
            "malformed XML: the document ends inside <{}>",
            stack.last().map(|e| e.name.as_str()).unwrap_or("")
        ));
    }
    root.ok_or_else(|| "the response has no XML element".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_with_entities_namespaces_and_cdata() {
        let root = parse(
            br#"<?xml version="1.0"?><a:feed xmlns:a="x"><t>Fish &amp; chips &#x263A; &nbsp;</t><c><![CDATA[<b>raw</b>]]></c><e k="v&lt;"/></a:feed>"#,
        )
        .unwrap();
        assert_eq!(root.name, "feed");
        assert_eq!(
            root.child_text("t").unwrap(),
            "Fish & chips \u{263A} &nbsp;"
        );
        assert_eq!(root.child_text("c").unwrap(), "<b>raw</b>");
        assert_eq!(root.child("e").unwrap().attr("k"), Some("v<"));
    }

    #[test]
    fn declared_encodings_are_honoured_and_bad_bytes_refused() {
        let (sjis, _, _) = encoding_rs::SHIFT_JIS
            .encode("<?xml version=\"1.0\" encoding=\"Shift_JIS\"?><r>法令の改正</r>");
        assert_eq!(parse(&sjis).unwrap().text(), "法令の改正");
        let (euc, _, _) =
            encoding_rs::EUC_JP.encode("<?xml version='1.0' encoding='EUC-JP'?><r>官報</r>");
        assert_eq!(parse(&euc).unwrap().text(), "官報");
        let e = parse(b"<r>\xff\xfe\xfa</r>").unwrap_err();
        assert!(e.contains("UTF-8"), "{e}");
        let e = parse(b"<?xml version=\"1.0\" encoding=\"klingon\"?><r/>").unwrap_err();
        assert!(e.contains("klingon"), "{e}");
    }

    #[test]
    fn malformed_documents_are_errors() {
        for bad in [
            &b"<a><b></a>"[..],
            b"<a>",
            b"",
            b"just text",
            b"<a></a><b></b>",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes()).unwrap_err().contains("deeper"));
    }
}
