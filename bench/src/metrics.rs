//! `/metrics` with many series: `bench-metrics [SERIES]` fills bunko's registry with about
//! SERIES series (default 10,000: HTTP counters and latency histograms over synthetic route
//! templates, job failures, per-user LLM usage — the shapes a busy instance has), then times
//! `Metrics::render` (what `GET /metrics` does besides two store reads) 200 times. Prints one
//! JSON line: series, bytes, render p50/p99/max in ms.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use bunko_core::metrics::Metrics;
use std::time::Instant;

fn main() {
    let target: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SERIES is a number"))
        .unwrap_or(10_000);
    let m = Metrics::new("bench", "bench");
    let count = |m: &Metrics| {
        m.render()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count()
    };
    // Each route adds 2 counters (200, 404) + 2 × 17 histogram series (buckets, sum, count)
    // for GET and POST; each user 2 series; each failure code 1.
    let mut i = 0;
    while count(&m) < target {
        for _ in 0..20 {
            let route = format!("/api/v1/bench/{i}/{{id}}");
            for method in ["GET", "POST"] {
                for status in ["200", "404"] {
                    m.http_requests
                        .with_label_values(&[method, &route, status])
                        .inc();
                }
                m.http_duration
                    .with_label_values(&[method, &route])
                    .observe(0.003);
            }
            let user = format!("00000000-0000-7000-8000-{i:012}");
            m.llm_user_tokens
                .with_label_values(&[&user, "none"])
                .inc_by(100);
            m.llm_user_cost
                .with_label_values(&[&user, "none"])
                .inc_by(0.01);
            m.job_failures
                .with_label_values(&["ingest", &format!("code_{i}")])
                .inc();
            i += 1;
        }
    }
    let series = count(&m);
    let bytes = m.render().len();
    let mut ms: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            let text = m.render();
            std::hint::black_box(text);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p) as usize];
    println!(
        "{}",
        serde_json::json!({
            "series": series,
            "bytes": bytes,
            "render_ms_p50": pct(0.5),
            "render_ms_p99": pct(0.99),
            "render_ms_max": ms[ms.len() - 1],
        })
    );
}
