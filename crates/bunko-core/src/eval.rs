//! Retrieval evaluation: the dataset format of `../shared/eval` (docs.jsonl or pages.jsonl,
//! queries.jsonl, qrels.tsv) and the metrics bunko reports (nDCG@10 with linear gains as in
//! trec_eval, MRR@10, recall@100). Queries with no positive judgement are skipped and counted.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct EvalDoc {
    pub id: String,
    pub title: String,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct EvalQuery {
    pub id: String,
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub name: String,
    pub docs: Vec<EvalDoc>,
    pub queries: Vec<EvalQuery>,
    /// query id → (doc id → grade)
    pub qrels: HashMap<String, HashMap<String, u32>>,
}

#[derive(Deserialize)]
struct DocLine {
    id: serde_json::Value,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    doc: Option<String>,
    #[serde(default)]
    page: Option<u32>,
    text: String,
}

#[derive(Deserialize)]
struct QueryLine {
    id: serde_json::Value,
    text: String,
}

fn id_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Dataset {
    /// Reads a dataset folder; every problem names the file and line.
    pub fn load(dir: &Path) -> Result<Dataset, String> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        let docs_file = if dir.join("docs.jsonl").is_file() {
            "docs.jsonl"
        } else {
            "pages.jsonl"
        };
        let mut ds = Dataset {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ..Default::default()
        };
        for (i, line) in read(docs_file)?
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let d: DocLine = serde_json::from_str(line)
                .map_err(|e| format!("{docs_file} line {}: {e}", i + 1))?;
            // Pages have no title of their own; their document name is the same on every page
            // and would only add noise to ranking.
            let _ = (d.doc, d.page);
            let title = d.title.unwrap_or_default();
            ds.docs.push(EvalDoc {
                id: id_text(&d.id),
                title,
                text: d.text,
            });
        }
        for (i, line) in read("queries.jsonl")?
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let q: QueryLine = serde_json::from_str(line)
                .map_err(|e| format!("queries.jsonl line {}: {e}", i + 1))?;
            ds.queries.push(EvalQuery {
                id: id_text(&q.id),
                text: q.text,
            });
        }
        for (i, line) in read("qrels.tsv")?
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let cols: Vec<&str> = line.split('\t').collect();
            let [q, d, g] = cols[..] else {
                return Err(format!(
                    "qrels.tsv line {}: expected query<TAB>doc<TAB>grade",
                    i + 1
                ));
            };
            let Ok(grade) = g.trim().parse::<u32>() else {
                if i == 0 {
                    continue; // a header line
                }
                return Err(format!(
                    "qrels.tsv line {}: grade `{g}` is not an integer ≥ 0",
                    i + 1
                ));
            };
            ds.qrels
                .entry(q.trim().to_owned())
                .or_default()
                .insert(d.trim().to_owned(), grade);
        }
        if ds.docs.is_empty() || ds.queries.is_empty() {
            return Err(format!("{}: no documents or no queries", dir.display()));
        }
        Ok(ds)
    }

    /// Queries with at least one positive judgement (the rest are skipped).
    pub fn judged(&self) -> Vec<&EvalQuery> {
        self.queries
            .iter()
            .filter(|q| {
                self.qrels
                    .get(&q.id)
                    .is_some_and(|j| j.values().any(|g| *g > 0))
            })
            .collect()
    }
}

/// nDCG@k with linear gains (grade / log2(rank + 1)), ideal from all judged grades.
pub fn ndcg_at(k: usize, ranked: &[String], judged: &HashMap<String, u32>) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| f64::from(*judged.get(d).unwrap_or(&0)) / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<u32> = judged.values().copied().filter(|g| *g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, g)| f64::from(*g) / ((i + 2) as f64).log2())
        .sum();
    if idcg == 0.0 { 0.0 } else { dcg / idcg }
}

/// Reciprocal rank of the first relevant result within k.
pub fn mrr_at(k: usize, ranked: &[String], judged: &HashMap<String, u32>) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|d| judged.get(d).is_some_and(|g| *g > 0))
        .map(|p| 1.0 / (p + 1) as f64)
        .unwrap_or(0.0)
}

/// Share of the relevant documents found within k.
pub fn recall_at(k: usize, ranked: &[String], judged: &HashMap<String, u32>) -> f64 {
    let relevant = judged.values().filter(|g| **g > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|d| judged.get(*d).is_some_and(|g| *g > 0))
        .count();
    found as f64 / relevant as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(pairs: &[(&str, u32)]) -> HashMap<String, u32> {
        pairs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    fn r(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let judged = j(&[("a", 2), ("b", 1), ("c", 0)]);
        // Perfect order.
        assert!((ndcg_at(10, &r(&["a", "b"]), &judged) - 1.0).abs() < 1e-12);
        // Reversed: DCG = 1/log2(2) + 2/log2(3) = 1 + 1.26186; IDCG = 2 + 1/log2(3) = 2.63093.
        let v = ndcg_at(10, &r(&["b", "a"]), &judged);
        assert!(
            (v - (1.0 + 2.0 / 3f64.log2()) / (2.0 + 1.0 / 3f64.log2())).abs() < 1e-12,
            "{v}"
        );
        assert_eq!(mrr_at(10, &r(&["x", "c", "b"]), &judged), 1.0 / 3.0);
        assert_eq!(mrr_at(2, &r(&["x", "c", "b"]), &judged), 0.0);
        assert_eq!(recall_at(100, &r(&["a", "x"]), &judged), 0.5);
        assert_eq!(ndcg_at(10, &r(&["x"]), &j(&[("c", 0)])), 0.0);
    }

    #[test]
    fn loads_the_shared_format_and_skips_unjudged_queries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pages.jsonl"),
            "{\"id\":\"p1\",\"doc\":\"guide\",\"page\":1,\"text\":\"パッケージ\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("queries.jsonl"),
            "{\"id\":\"q1\",\"text\":\"x\"}\n{\"id\":\"q2\",\"text\":\"y\"}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("qrels.tsv"), "q1\tp1\t2\nq2\tp1\t0\n").unwrap();
        let ds = Dataset::load(dir.path()).unwrap();
        assert_eq!(ds.docs[0].title, "", "pages carry no title");
        assert_eq!(ds.judged().len(), 1);
        std::fs::write(dir.path().join("qrels.tsv"), "q1\tp1\t2\nq2\tp1\thigh\n").unwrap();
        assert!(Dataset::load(dir.path()).unwrap_err().contains("line 2"));
    }
}
