//! The metrics bunko exports (Prometheus text format). Labels are bounded by construction:
//! routes are templates, methods and statuses are closed sets, queues and kinds come from
//! code and config, never from request data.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_in_flight: IntGauge,
    pub jobs: IntGaugeVec,
    pub job_duration: HistogramVec,
    pub job_failures: IntCounterVec,
    pub ratelimit_rejections: IntCounterVec,
    pub ingest_documents: IntCounterVec,
    pub ingest_pages: IntCounterVec,
    pub ingest_stage_duration: HistogramVec,
    pub ingest_bytes: prometheus::IntCounter,
    pub llm_requests: IntCounterVec,
    pub llm_tokens: IntCounterVec,
    pub llm_cost: prometheus::CounterVec,
    pub llm_duration: HistogramVec,
    pub llm_ttft: HistogramVec,
    pub llm_cache: IntCounterVec,
    pub gateway_overhead: prometheus::Histogram,
    pub llm_breaker: IntGaugeVec,
    pub llm_quota: IntCounterVec,
    pub rag_citations: IntCounterVec,
    pub rag_answers: IntCounterVec,
}

/// Gateway overhead buckets: 10 µs to 50 ms.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
];

/// Latency buckets from 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const JOB_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0,
];

impl Metrics {
    #[allow(clippy::expect_used)] // static metric definitions: a failure is a programming error
    pub fn new(version: &str, commit: &str) -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "bunko_http_requests_total",
                "HTTP requests answered, by route template and status.",
            ),
            &["method", "route", "status"],
        )
        .expect("metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "bunko_http_request_duration_seconds",
                "Time to answer an HTTP request, by route template.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("metric");
        let http_in_flight = IntGauge::new(
            "bunko_http_requests_in_flight",
            "HTTP requests being answered now.",
        )
        .expect("metric");
        let jobs = IntGaugeVec::new(
            Opts::new(
                "bunko_jobs",
                "Jobs in the durable queue, by queue and state (read at scrape time).",
            ),
            &["queue", "state"],
        )
        .expect("metric");
        let job_duration = HistogramVec::new(
            HistogramOpts::new(
                "bunko_job_duration_seconds",
                "Time one job attempt took, by queue, kind and outcome.",
            )
            .buckets(JOB_BUCKETS.to_vec()),
            &["queue", "kind", "outcome"],
        )
        .expect("metric");
        let job_failures = IntCounterVec::new(
            Opts::new(
                "bunko_job_failures_total",
                "Failed job attempts, by queue and error code.",
            ),
            &["queue", "code"],
        )
        .expect("metric");
        let ratelimit_rejections = IntCounterVec::new(
            Opts::new(
                "bunko_ratelimit_rejections_total",
                "Requests refused by a rate limit, by route class.",
            ),
            &["class"],
        )
        .expect("metric");
        let ingest_documents = IntCounterVec::new(
            Opts::new(
                "bunko_ingest_documents_total",
                "Documents processed, by outcome (ready, or the failure code).",
            ),
            &["outcome"],
        )
        .expect("metric");
        let ingest_pages = IntCounterVec::new(
            Opts::new(
                "bunko_ingest_pages_total",
                "Pages extracted, by method (text layer or OCR).",
            ),
            &["method"],
        )
        .expect("metric");
        let ingest_stage_duration = HistogramVec::new(
            HistogramOpts::new(
                "bunko_ingest_stage_duration_seconds",
                "Time one processing stage took for one document.",
            )
            .buckets(JOB_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("metric");
        let ingest_bytes = prometheus::IntCounter::new(
            "bunko_ingest_bytes_total",
            "Bytes of original files accepted for ingestion (duplicates not counted).",
        )
        .expect("metric");
        // Labels: `model` is a configured alias, `provider` a configured provider name, `outcome`
        // a closed set — none comes from request data (an unknown alias is counted as
        // `unknown`).
        let llm_requests = IntCounterVec::new(
            Opts::new(
                "bunko_llm_requests_total",
                "Gateway requests, by model alias, provider and outcome.",
            ),
            &["model", "provider", "outcome"],
        )
        .expect("metric");
        let llm_tokens = IntCounterVec::new(
            Opts::new(
                "bunko_llm_tokens_total",
                "Tokens through the gateway, by model alias and direction (input/output).",
            ),
            &["model", "direction"],
        )
        .expect("metric");
        let llm_cost = prometheus::CounterVec::new(
            Opts::new(
                "bunko_llm_cost_usd_total",
                "Cost of gateway calls in US dollars, from the configured prices.",
            ),
            &["model"],
        )
        .expect("metric");
        let llm_duration = HistogramVec::new(
            HistogramOpts::new(
                "bunko_llm_request_duration_seconds",
                "Time from a gateway request to its last token.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model"],
        )
        .expect("metric");
        let llm_ttft = HistogramVec::new(
            HistogramOpts::new(
                "bunko_llm_time_to_first_token_seconds",
                "Time from a gateway request to its first token.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model"],
        )
        .expect("metric");
        let llm_cache = IntCounterVec::new(
            Opts::new(
                "bunko_llm_cache_requests_total",
                "Response-cache lookups, by result (hit/miss/bypass).",
            ),
            &["result"],
        )
        .expect("metric");
        let rag_citations = IntCounterVec::new(
            Opts::new(
                "bunko_rag_citations_total",
                "Citations in answers, by outcome (supported/unsupported/invalid).",
            ),
            &["outcome"],
        )
        .expect("metric");
        let rag_answers = IntCounterVec::new(
            Opts::new(
                "bunko_rag_answers_total",
                "Answers to /api/v1/ask, by kind (generated/extractive/not_found/failed).",
            ),
            &["kind"],
        )
        .expect("metric");
        let gateway_overhead = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "bunko_gateway_overhead_seconds",
                "Time a gateway request spends in bunko itself, excluding the upstream.",
            )
            .buckets(OVERHEAD_BUCKETS.to_vec()),
        )
        .expect("metric");
        let llm_breaker = IntGaugeVec::new(
            Opts::new(
                "bunko_llm_breaker_state",
                "Circuit breaker per provider: 0 closed, 1 open, 2 half-open.",
            ),
            &["provider"],
        )
        .expect("metric");
        let llm_quota = IntCounterVec::new(
            Opts::new(
                "bunko_llm_quota_events_total",
                "Gateway calls that passed a quota's soft limit (warning) or were refused (exceeded).",
            ),
            &["event"],
        )
        .expect("metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "bunko_build_info",
                "Always 1; labels say which build is running.",
            ),
            &["version", "commit"],
        )
        .expect("metric");
        build_info.with_label_values(&[version, commit]).set(1);
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(http_in_flight.clone()),
            Box::new(jobs.clone()),
            Box::new(job_duration.clone()),
            Box::new(job_failures.clone()),
            Box::new(ratelimit_rejections.clone()),
            Box::new(ingest_documents.clone()),
            Box::new(ingest_pages.clone()),
            Box::new(ingest_stage_duration.clone()),
            Box::new(ingest_bytes.clone()),
            Box::new(llm_requests.clone()),
            Box::new(llm_tokens.clone()),
            Box::new(llm_cost.clone()),
            Box::new(llm_duration.clone()),
            Box::new(llm_ttft.clone()),
            Box::new(llm_cache.clone()),
            Box::new(gateway_overhead.clone()),
            Box::new(llm_breaker.clone()),
            Box::new(llm_quota.clone()),
            Box::new(rag_citations.clone()),
            Box::new(rag_answers.clone()),
            Box::new(build_info),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        // Closed label sets start at 0, so a rate is 0 rather than absent and dashboards and
        // alerts find the series before the first event.
        for class in crate::config::RATE_CLASSES {
            ratelimit_rejections.with_label_values(&[class]);
        }
        for method in [
            crate::documents::PageMethod::Text,
            crate::documents::PageMethod::Ocr,
        ] {
            ingest_pages.with_label_values(&[method.as_str()]);
        }
        ingest_documents.with_label_values(&["ready"]);
        for r in ["hit", "miss", "bypass"] {
            llm_cache.with_label_values(&[r]);
        }
        for e in ["warning", "exceeded"] {
            llm_quota.with_label_values(&[e]);
        }
        for o in ["supported", "unsupported", "invalid"] {
            rag_citations.with_label_values(&[o]);
        }
        for k in ["generated", "extractive", "not_found", "failed"] {
            rag_answers.with_label_values(&[k]);
        }
        Self {
            registry,
            http_requests,
            http_duration,
            http_in_flight,
            jobs,
            job_duration,
            job_failures,
            ratelimit_rejections,
            ingest_documents,
            ingest_pages,
            ingest_stage_duration,
            ingest_bytes,
            llm_requests,
            llm_tokens,
            llm_cost,
            llm_duration,
            llm_ttft,
            llm_cache,
            gateway_overhead,
            llm_breaker,
            llm_quota,
            rag_citations,
            rag_answers,
        }
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_names_with_units_and_build_info() {
        let m = Metrics::new("1.2.3", "abc");
        m.http_requests
            .with_label_values(&["GET", "/healthz", "200"])
            .inc();
        let text = m.render();
        assert!(
            text.contains("bunko_build_info{commit=\"abc\",version=\"1.2.3\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "bunko_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
        ));
        assert!(text.contains("process_resident_memory_bytes"));
        // Closed label sets are there at 0 before any event.
        assert!(text.contains("bunko_llm_quota_events_total{event=\"exceeded\"} 0"));
        assert!(text.contains("bunko_rag_answers_total{kind=\"not_found\"} 0"));
    }
}
