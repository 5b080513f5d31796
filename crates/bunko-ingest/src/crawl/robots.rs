//! robots.txt (RFC 9309) for the web pages feeds link to: the group for the `bunko` product
//! token, else `*`; the longest matching rule wins and `Allow` wins a tie; `*` and `$` in
//! paths; `Crawl-delay` (not in the RFC, widely used) slows requests to the host.

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// (allow, path pattern)
    rules: Vec<(bool, String)>,
    pub crawl_delay: Option<f64>,
}

/// The rules for `agent` (a product token such as `bunko`) in a robots.txt.
pub fn parse(text: &str, agent: &str) -> Rules {
    let agent = agent.to_ascii_lowercase();
    // (agents of the group, rules, delay)
    let mut groups: Vec<(Vec<String>, Rules)> = Vec::new();
    let mut in_agents = false;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
        match key.as_str() {
            "user-agent" => {
                if !in_agents {
                    groups.push((Vec::new(), Rules::default()));
                }
                in_agents = true;
                if let Some(g) = groups.last_mut() {
                    g.0.push(value.to_ascii_lowercase());
                }
            }
            "allow" | "disallow" => {
                in_agents = false;
                if let Some(g) = groups.last_mut()
                    && !value.is_empty()
                {
                    g.1.rules.push((key == "allow", value.to_owned()));
                }
            }
            "crawl-delay" => {
                in_agents = false;
                if let Some(g) = groups.last_mut() {
                    g.1.crawl_delay = value
                        .parse()
                        .ok()
                        .filter(|d: &f64| d.is_finite() && *d >= 0.0);
                }
            }
            _ => {}
        }
    }
    let mine: Vec<&Rules> = groups
        .iter()
        .filter(|(agents, _)| {
            agents
                .iter()
                .any(|a| a != "*" && agent.starts_with(a.as_str()))
        })
        .map(|(_, r)| r)
        .collect();
    let chosen: Vec<&Rules> = if mine.is_empty() {
        groups
            .iter()
            .filter(|(a, _)| a.iter().any(|a| a == "*"))
            .map(|(_, r)| r)
            .collect()
    } else {
        mine
    };
    // Groups for the same agent are merged.
    let mut out = Rules::default();
    for r in chosen {
        out.rules.extend(r.rules.iter().cloned());
        out.crawl_delay = out.crawl_delay.or(r.crawl_delay);
    }
    out
}

fn matches(pattern: &str, path: &str) -> Option<usize> {
    let (pattern, anchored) = match pattern.strip_suffix('$') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut pos = 0;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            if !path.starts_with(part) {
                return None;
            }
            pos = part.len();
        } else {
            let found = path[pos..].find(part)?;
            pos += found + part.len();
        }
    }
    if anchored && pos != path.len() {
        // A trailing `*` before `$` lets the rest be anything.
        if !pattern.ends_with('*') {
            return None;
        }
    }
    Some(pattern.len())
}

impl Rules {
    /// Whether `path` (with its query) may be fetched.
    pub fn allowed(&self, path: &str) -> bool {
        if path == "/robots.txt" {
            return true;
        }
        let mut best: Option<(usize, bool)> = None;
        for (allow, pattern) in &self.rules {
            if let Some(len) = matches(pattern, path) {
                best = match best {
                    Some((l, a)) if l > len || (l == len && a) => Some((l, a)),
                    _ => Some((len, *allow)),
                };
            }
        }
        best.is_none_or(|(_, allow)| allow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROBOTS: &str = "
# comment
User-agent: *
Disallow: /private/
Allow: /private/open.html
Crawl-delay: 2

User-agent: BadBot
Disallow: /

User-agent: bunko
User-agent: other
Disallow: /drafts
Allow: /drafts/public*.pdf$
";

    #[test]
    fn our_group_else_the_default_one() {
        let mine = parse(ROBOTS, "bunko");
        assert!(mine.allowed("/private/x"), "our own group applies, not *");
        assert!(!mine.allowed("/drafts/a.pdf"));
        assert!(mine.allowed("/drafts/public-2024.pdf"));
        assert!(!mine.allowed("/drafts/public-2024.pdf?x=1"));
        assert_eq!(mine.crawl_delay, None);
        let other = parse(ROBOTS, "somebot");
        assert!(!other.allowed("/private/x"));
        assert!(other.allowed("/private/open.html"), "the longer Allow wins");
        assert!(other.allowed("/news/1"));
        assert_eq!(other.crawl_delay, Some(2.0));
        assert!(!parse(ROBOTS, "badbot").allowed("/anything"));
        assert!(parse("", "bunko").allowed("/anything"));
        assert!(parse("garbage\n\u{0}\nDisallow /x", "bunko").allowed("/x"));
    }
}
