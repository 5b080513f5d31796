//! Search results and reciprocal-rank fusion. Fusion lives here, not in an index adapter, so
//! every backend ranks alike.

use std::collections::HashMap;

/// One leg's ranked ids, best first, with a weight.
pub struct Leg<'a> {
    pub ids: &'a [String],
    pub weight: f64,
}

/// Reciprocal-rank fusion: score(d) = Σ weight / (k + rank), rank 1-based. Ties keep the order
/// in which documents were first seen (earlier legs first).
pub fn rrf(legs: &[Leg<'_>], k: f64) -> Vec<(String, f64)> {
    let mut scores: HashMap<&str, (f64, usize)> = HashMap::new();
    let mut seen = 0usize;
    for leg in legs {
        for (i, id) in leg.ids.iter().enumerate() {
            let e = scores.entry(id.as_str()).or_insert_with(|| {
                seen += 1;
                (0.0, seen)
            });
            e.0 += leg.weight / (k + (i + 1) as f64);
        }
    }
    let mut out: Vec<(String, f64, usize)> = scores
        .into_iter()
        .map(|(id, (s, o))| (id.to_owned(), s, o))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    out.into_iter().map(|(id, s, _)| (id, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuses_by_reciprocal_rank() {
        let a: Vec<String> = ["x", "y", "z"].iter().map(|s| s.to_string()).collect();
        let b: Vec<String> = ["y", "w"].iter().map(|s| s.to_string()).collect();
        let fused = rrf(
            &[
                Leg {
                    ids: &a,
                    weight: 1.0,
                },
                Leg {
                    ids: &b,
                    weight: 1.0,
                },
            ],
            60.0,
        );
        let ids: Vec<&str> = fused.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, vec!["y", "x", "w", "z"]);
        assert!((fused[0].1 - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-12);
        let only_b = rrf(
            &[
                Leg {
                    ids: &a,
                    weight: 0.0,
                },
                Leg {
                    ids: &b,
                    weight: 1.0,
                },
            ],
            60.0,
        );
        assert_eq!(only_b[0].0, "y");
        assert!(rrf(&[], 60.0).is_empty());
    }
}
