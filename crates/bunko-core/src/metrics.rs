//! The metrics bunko exports (Prometheus text format). Labels are bounded by construction:
//! routes are templates, methods and statuses are closed sets, queues and kinds come from
//! code and config, never from request data.

use prometheus::process_collector::ProcessCollector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Where documents come from (`bunko_documents_added_total{source}`): the `source` every
/// caller of the ingest path passes is one of these, and the label is exported from the start.
pub const DOCUMENT_SOURCES: &[&str] = &["upload", "sample"];

pub struct Metrics {
    pub registry: Registry,
    /// Name and label names of every metric registered, in registration order (the catalogue
    /// in `docs/operations/metrics.md` is checked against it).
    described: Vec<(String, Vec<String>)>,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_in_flight: IntGauge,
    pub jobs: IntGaugeVec,
    pub job_duration: HistogramVec,
    pub job_failures: IntCounterVec,
    pub ratelimit_rejections: IntCounterVec,
    pub documents_added: IntCounterVec,
    pub document_processing: Histogram,
    pub ingest_documents: IntCounterVec,
    pub ingest_pages: IntCounterVec,
    pub ingest_stage_duration: HistogramVec,
    pub ingest_bytes: IntCounter,
    pub ocr_duration: Histogram,
    pub ocr_confidence: Histogram,
    pub embed_texts: IntCounterVec,
    pub embed_batch_size: Histogram,
    pub embed_batch_duration: Histogram,
    pub search_duration: HistogramVec,
    pub search_legs: IntCounterVec,
    pub index_chunks: IntGaugeVec,
    pub index_size: IntGaugeVec,
    pub llm_requests: IntCounterVec,
    pub llm_tokens: IntCounterVec,
    pub llm_cost: prometheus::CounterVec,
    pub llm_duration: HistogramVec,
    pub llm_ttft: HistogramVec,
    pub llm_cache: IntCounterVec,
    pub llm_user_tokens: IntCounterVec,
    pub llm_user_cost: prometheus::CounterVec,
    pub gateway_overhead: Histogram,
    pub llm_breaker: IntGaugeVec,
    pub llm_quota: IntCounterVec,
    pub rag_citations: IntCounterVec,
    pub rag_answers: IntCounterVec,
    pub summaries: IntCounterVec,
    pub crawl_items: IntCounterVec,
    pub crawl_requests: IntCounterVec,
    pub crawl_runs: IntCounterVec,
    pub schedule_next_run: prometheus::GaugeVec,
    pub schedule_last_run: prometheus::GaugeVec,
    pub schedule_last_outcome: IntGaugeVec,
    pub backup_last_success: prometheus::Gauge,
    pub backup_last_size: prometheus::Gauge,
    pub backup_last_duration: prometheus::Gauge,
    pub selfcheck_status: IntGaugeVec,
    pub selfcheck_last_run: prometheus::Gauge,
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
/// Texts per embedding batch (the embedder batches at most 32).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
/// OCR confidence, as a ratio.
const RATIO_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0];

/// Registers metrics, remembering what it registered. Definitions are static: a failure is a
/// programming error, caught by every test that builds [`Metrics`].
struct Builder {
    registry: Registry,
    described: Vec<(String, Vec<String>)>,
}

#[allow(clippy::expect_used)]
impl Builder {
    fn add<C: prometheus::core::Collector + Clone + 'static>(&mut self, c: C) -> C {
        self.register(Box::new(c.clone()));
        c
    }
    fn register(&mut self, c: Box<dyn prometheus::core::Collector>) {
        for d in c.desc() {
            self.described
                .push((d.fq_name.clone(), d.variable_labels.clone()));
        }
        self.registry.register(c).expect("metric registered once");
    }
    fn counter(&mut self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("metric"))
    }
    fn counters(&mut self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("metric"))
    }
    fn gauges(&mut self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("metric"))
    }
    fn histogram(&mut self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.add(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("metric"),
        )
    }
    fn histograms(
        &mut self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> HistogramVec {
        self.add(
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("metric"),
        )
    }
}

impl Metrics {
    #[allow(clippy::expect_used)] // static metric definitions: a failure is a programming error
    pub fn new(version: &str, commit: &str) -> Self {
        let mut b = Builder {
            registry: Registry::new(),
            described: Vec::new(),
        };
        let http_requests = b.counters(
            "bunko_http_requests_total",
            "HTTP requests answered, by route template and status.",
            &["method", "route", "status"],
        );
        let http_duration = b.histograms(
            "bunko_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            LATENCY_BUCKETS,
            &["method", "route"],
        );
        let http_in_flight = b.add(
            IntGauge::new(
                "bunko_http_requests_in_flight",
                "HTTP requests being answered now.",
            )
            .expect("metric"),
        );
        let jobs = b.gauges(
            "bunko_jobs",
            "Jobs in the durable queue, by queue and state (read at scrape time).",
            &["queue", "state"],
        );
        let job_duration = b.histograms(
            "bunko_job_duration_seconds",
            "Time one job attempt took, by queue, kind and outcome.",
            JOB_BUCKETS,
            &["queue", "kind", "outcome"],
        );
        let job_failures = b.counters(
            "bunko_job_failures_total",
            "Failed job attempts, by queue and error code.",
            &["queue", "code"],
        );
        let ratelimit_rejections = b.counters(
            "bunko_ratelimit_rejections_total",
            "Requests refused by a rate limit, by route class.",
            &["class"],
        );
        let documents_added = b.counters(
            "bunko_documents_added_total",
            "New documents collected, by source (upload, sample, crawlers); duplicates not counted.",
            &["source"],
        );
        let document_processing = b.histogram(
            "bunko_document_processing_seconds",
            "Time from the start of a document's processing to the document being ready.",
            JOB_BUCKETS,
        );
        let ingest_documents = b.counters(
            "bunko_ingest_documents_total",
            "Documents processed, by outcome (ready, or the failure code).",
            &["outcome"],
        );
        let ingest_pages = b.counters(
            "bunko_ingest_pages_total",
            "Pages extracted, by method (text layer or OCR).",
            &["method"],
        );
        let ingest_stage_duration = b.histograms(
            "bunko_ingest_stage_duration_seconds",
            "Time one processing stage took for one document.",
            JOB_BUCKETS,
            &["stage"],
        );
        let ingest_bytes = b.counter(
            "bunko_ingest_bytes_total",
            "Bytes of original files accepted for ingestion (duplicates not counted).",
        );
        let ocr_duration = b.histogram(
            "bunko_ocr_duration_seconds",
            "Time spent rendering and recognising the OCR'd pages of one document.",
            JOB_BUCKETS,
        );
        let ocr_confidence = b.histogram(
            "bunko_ocr_page_confidence_ratio",
            "Mean word confidence of each OCR'd page (0-1).",
            RATIO_BUCKETS,
        );
        let embed_texts = b.counters(
            "bunko_embed_texts_total",
            "Texts embedded, by role (passage/query) and source (model, or the embedding cache).",
            &["role", "source"],
        );
        let embed_batch_size = b.histogram(
            "bunko_embed_batch_size",
            "Texts per batch through the embedding model.",
            BATCH_BUCKETS,
        );
        let embed_batch_duration = b.histogram(
            "bunko_embed_batch_duration_seconds",
            "Time the embedding model took for one batch.",
            LATENCY_BUCKETS,
        );
        let search_duration = b.histograms(
            "bunko_search_duration_seconds",
            "Time of one search through the index (both halves and the fusion), by mode.",
            LATENCY_BUCKETS,
            &["mode"],
        );
        let search_legs = b.counters(
            "bunko_search_legs_total",
            "Search halves run, by leg (keyword/vector) and status (ok, empty, unavailable).",
            &["leg", "status"],
        );
        let index_chunks = b.gauges(
            "bunko_index_chunks",
            "Chunks in the search index, by half (read at scrape time; vector once loaded).",
            &["index"],
        );
        let index_size = b.gauges(
            "bunko_index_size_bytes",
            "Size of the search index on disk, by half (read at scrape time).",
            &["index"],
        );
        // Labels: `model` is a configured alias, `provider` a configured provider name, `outcome`
        // a closed set — none comes from request data (an unknown alias is counted as
        // `unknown`).
        let llm_requests = b.counters(
            "bunko_llm_requests_total",
            "Gateway requests, by model alias, provider and outcome.",
            &["model", "provider", "outcome"],
        );
        let llm_tokens = b.counters(
            "bunko_llm_tokens_total",
            "Tokens through the gateway, by model alias and direction (input/output).",
            &["model", "direction"],
        );
        let llm_cost = b.add(
            prometheus::CounterVec::new(
                Opts::new(
                    "bunko_llm_cost_usd_total",
                    "Cost of gateway calls in US dollars, from the configured prices.",
                ),
                &["model"],
            )
            .expect("metric"),
        );
        let llm_duration = b.histograms(
            "bunko_llm_request_duration_seconds",
            "Time from a gateway request to its last token.",
            LATENCY_BUCKETS,
            &["model"],
        );
        let llm_ttft = b.histograms(
            "bunko_llm_time_to_first_token_seconds",
            "Time from a gateway request to its first token.",
            LATENCY_BUCKETS,
            &["model"],
        );
        let llm_cache = b.counters(
            "bunko_llm_cache_requests_total",
            "Response-cache lookups, by result (hit/miss/bypass).",
            &["result"],
        );
        // Per user and project: ids from the database (accounts and projects exist only when
        // an administrator or owner makes them), never names or e-mail addresses.
        let llm_user_tokens = b.counters(
            "bunko_llm_user_tokens_total",
            "Tokens through the gateway, by user id and the API key's project id (`none`).",
            &["user_id", "project_id"],
        );
        let llm_user_cost = b.add(
            prometheus::CounterVec::new(
                Opts::new(
                    "bunko_llm_user_cost_usd_total",
                    "Cost of gateway calls in US dollars, by user id and the API key's project id.",
                ),
                &["user_id", "project_id"],
            )
            .expect("metric"),
        );
        let gateway_overhead = b.histogram(
            "bunko_gateway_overhead_seconds",
            "Time a gateway request spends in bunko itself, excluding the upstream.",
            OVERHEAD_BUCKETS,
        );
        let llm_breaker = b.gauges(
            "bunko_llm_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 open, 2 half-open.",
            &["provider"],
        );
        let llm_quota = b.counters(
            "bunko_llm_quota_events_total",
            "Gateway calls that passed a quota's soft limit (warning) or were refused (exceeded).",
            &["event"],
        );
        let rag_citations = b.counters(
            "bunko_rag_citations_total",
            "Citations in answers, by outcome (supported/unsupported/invalid).",
            &["outcome"],
        );
        let rag_answers = b.counters(
            "bunko_rag_answers_total",
            "Answers to /api/v1/ask, by kind (generated/extractive/not_found/failed).",
            &["kind"],
        );
        let summaries = b.counters(
            "bunko_summaries_total",
            "Document summary jobs finished, by outcome (generated/failed).",
            &["outcome"],
        );
        // Sources are named by administrators (config or API), not by request data.
        let crawl_items = b.counters(
            "bunko_crawl_items_total",
            "Items crawls looked at, by source and outcome (added/unchanged/failed/deleted).",
            &["source", "outcome"],
        );
        let crawl_requests = b.counters(
            "bunko_crawl_requests_total",
            "HTTP requests made to sources (listings and files).",
            &["source"],
        );
        let crawl_runs = b.counters(
            "bunko_crawl_runs_total",
            "Crawls finished, by source and outcome (ok/failed).",
            &["source", "outcome"],
        );
        // Schedules are named by administrators (config or API), not by request data.
        let schedule_next_run = b.add(
            prometheus::GaugeVec::new(
                Opts::new(
                    "bunko_schedule_next_run_timestamp_seconds",
                    "When each enabled schedule fires next (Unix seconds; read at scrape time).",
                ),
                &["schedule"],
            )
            .expect("metric"),
        );
        let schedule_last_run = b.add(
            prometheus::GaugeVec::new(
                Opts::new(
                    "bunko_schedule_last_run_timestamp_seconds",
                    "When each schedule last fired (Unix seconds; read at scrape time).",
                ),
                &["schedule"],
            )
            .expect("metric"),
        );
        let schedule_last_outcome = b.gauges(
            "bunko_schedule_last_outcome",
            "1 for the state of each schedule's last firing (its job's state, or skipped); 0 for the others.",
            &["schedule", "outcome"],
        );
        let backup_last_success = b.add(
            prometheus::Gauge::new(
                "bunko_backup_last_success_timestamp_seconds",
                "When the last successful backup was taken (Unix seconds; 0 = none yet).",
            )
            .expect("metric"),
        );
        let backup_last_size = b.add(
            prometheus::Gauge::new(
                "bunko_backup_last_size_bytes",
                "Size of the last successful backup archive.",
            )
            .expect("metric"),
        );
        let backup_last_duration = b.add(
            prometheus::Gauge::new(
                "bunko_backup_last_duration_seconds",
                "How long the last successful backup took.",
            )
            .expect("metric"),
        );
        let selfcheck_status = b.gauges(
            "bunko_selfcheck_status",
            "The last self-check, per check (database, index, disk, models, llm): 0 ok, 1 warning, 2 failed.",
            &["check"],
        );
        let selfcheck_last_run = b.add(
            prometheus::Gauge::new(
                "bunko_selfcheck_last_run_timestamp_seconds",
                "When the last self-check ran (Unix seconds; 0 = not yet).",
            )
            .expect("metric"),
        );
        let build_info = b.gauges(
            "bunko_build_info",
            "Always 1; labels say which build is running.",
            &["version", "commit"],
        );
        build_info.with_label_values(&[version, commit]).set(1);
        b.register(Box::new(ProcessCollector::for_self()));
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
        for s in DOCUMENT_SOURCES {
            documents_added.with_label_values(&[s]);
        }
        for role in ["passage", "query"] {
            for source in ["model", "cache"] {
                embed_texts.with_label_values(&[role, source]);
            }
        }
        for leg in ["keyword", "vector"] {
            for status in ["ok", "empty", "unavailable"] {
                search_legs.with_label_values(&[leg, status]);
            }
        }
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
        for o in ["generated", "failed"] {
            summaries.with_label_values(&[o]);
        }
        Self {
            registry: b.registry,
            described: b.described,
            http_requests,
            http_duration,
            http_in_flight,
            jobs,
            job_duration,
            job_failures,
            ratelimit_rejections,
            documents_added,
            document_processing,
            ingest_documents,
            ingest_pages,
            ingest_stage_duration,
            ingest_bytes,
            ocr_duration,
            ocr_confidence,
            embed_texts,
            embed_batch_size,
            embed_batch_duration,
            search_duration,
            search_legs,
            index_chunks,
            index_size,
            llm_requests,
            llm_tokens,
            llm_cost,
            llm_duration,
            llm_ttft,
            llm_cache,
            llm_user_tokens,
            llm_user_cost,
            gateway_overhead,
            llm_breaker,
            llm_quota,
            rag_citations,
            rag_answers,
            summaries,
            crawl_items,
            crawl_requests,
            crawl_runs,
            schedule_next_run,
            schedule_last_run,
            schedule_last_outcome,
            backup_last_success,
            backup_last_size,
            backup_last_duration,
            selfcheck_status,
            selfcheck_last_run,
        }
    }

    /// Every registered metric's name and label names (the process collector's included).
    pub fn described(&self) -> &[(String, Vec<String>)] {
        &self.described
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

    /// `docs/operations/metrics.md` lists every metric with its labels: each table row's
    /// first column names metrics (in backticks), its third column names their labels.
    #[test]
    fn catalogue_matches_the_registry() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/operations/metrics.md"
        );
        let doc = std::fs::read_to_string(path).expect("docs/operations/metrics.md");
        let ticked = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        let mut documented = std::collections::BTreeMap::new();
        for line in doc.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').collect();
            let labels = ticked(cells[3]);
            for name in ticked(cells[1]) {
                assert!(
                    documented.insert(name.clone(), labels.clone()).is_none(),
                    "{name} is listed twice"
                );
            }
        }
        let m = Metrics::new("t", "t");
        let mut problems = Vec::new();
        for (name, labels) in m.described() {
            match documented.remove(name) {
                None => problems.push(format!("{name} is exported but not in the catalogue")),
                Some(doc_labels) => {
                    for l in labels {
                        if !doc_labels.contains(l) {
                            problems.push(format!("{name}: label `{l}` is not documented"));
                        }
                    }
                }
            }
        }
        for name in documented.keys() {
            problems.push(format!("{name} is in the catalogue but not exported"));
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
