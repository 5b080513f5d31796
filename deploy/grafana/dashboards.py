#!/usr/bin/env python3
"""Writes bunko's Grafana dashboards (deploy/grafana/dashboards/*.json) from the panel lists
below: `python3 deploy/grafana/dashboards.py`. The test suite checks the committed JSON is
what this script writes, and evaluates every bunko expression in a real Prometheus."""
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "prometheus"}

# Model answers and uploads are slow by nature; the latency panels show the rest.
FAST = 'route!~"/api/v1/ask|/v1/chat/completions|/api/chat|/api/generate|/api/v1/projects/\\\\{project\\\\}/documents|/api/v1/projects/\\\\{project\\\\}/notes:generate"'


def q(p, metric, by="le"):
    return f"histogram_quantile({p}, sum by ({by}) (rate({metric}_bucket[5m])))"


# (title, unit, [(expr, legend)], kind)
DASHBOARDS = {
    "overview": ("bunko — Overview", [
        ("Requests per second by status", "reqps", [
            ('sum by (status) (rate(bunko_http_requests_total[5m]))', "{{status}}")], "timeseries"),
        ("Error ratio (5xx)", "percentunit", [
            ('sum(rate(bunko_http_requests_total{status=~"5.."}[5m])) / clamp_min(sum(rate(bunko_http_requests_total[5m])), 1e-9)', "5xx")], "timeseries"),
        ("Latency, API (model answers and uploads excepted)", "s", [
            (f'histogram_quantile(0.5, sum by (le) (rate(bunko_http_request_duration_seconds_bucket{{{FAST}}}[5m])))', "p50"),
            (f'histogram_quantile(0.95, sum by (le) (rate(bunko_http_request_duration_seconds_bucket{{{FAST}}}[5m])))', "p95"),
            (f'histogram_quantile(0.99, sum by (le) (rate(bunko_http_request_duration_seconds_bucket{{{FAST}}}[5m])))', "p99")], "timeseries"),
        ("Slowest routes (p95)", "s", [
            ('topk(5, histogram_quantile(0.95, sum by (le, route) (rate(bunko_http_request_duration_seconds_bucket[5m]))))', "{{route}}")], "timeseries"),
        ("In flight", "short", [('sum(bunko_http_requests_in_flight)', "in flight")], "timeseries"),
        ("Rate-limit refusals", "reqps", [
            ('sum by (class) (rate(bunko_ratelimit_rejections_total[5m]))', "{{class}}")], "timeseries"),
        ("Build", "short", [('bunko_build_info', "{{version}} {{commit}}")], "table"),
    ]),
    "ingest": ("bunko — Ingest pipeline", [
        ("Documents processed by outcome", "short", [
            ('sum by (outcome) (increase(bunko_ingest_documents_total[1h]))', "{{outcome}}")], "timeseries"),
        ("Pages by method", "short", [
            ('sum by (method) (rate(bunko_ingest_pages_total[5m]))', "{{method}}")], "timeseries"),
        ("Stage duration p95", "s", [
            ('histogram_quantile(0.95, sum by (le, stage) (rate(bunko_ingest_stage_duration_seconds_bucket[15m])))', "{{stage}}")], "timeseries"),
        ("Documents collected by source", "short", [
            ('sum by (source) (increase(bunko_documents_added_total[1h]))', "{{source}}")], "timeseries"),
        ("Processing time per document", "s", [
            (q(0.5, "bunko_document_processing_seconds"), "p50"),
            (q(0.95, "bunko_document_processing_seconds"), "p95")], "timeseries"),
        ("OCR time per document p95", "s", [(q(0.95, "bunko_ocr_duration_seconds"), "p95")], "timeseries"),
        ("OCR confidence (share of pages below 0.6)", "percentunit", [
            ('sum(rate(bunko_ocr_page_confidence_ratio_bucket{le="0.6"}[1h])) / clamp_min(sum(rate(bunko_ocr_page_confidence_ratio_count[1h])), 1e-9)', "< 0.6")], "timeseries"),
        ("Embedding throughput (texts/s)", "short", [
            ('sum by (role, source) (rate(bunko_embed_texts_total[5m]))', "{{role}} {{source}}")], "timeseries"),
        ("Embedding cache hit ratio (passages)", "percentunit", [
            ('sum(rate(bunko_embed_texts_total{role="passage",source="cache"}[1h])) / clamp_min(sum(rate(bunko_embed_texts_total{role="passage"}[1h])), 1e-9)', "hits")], "stat"),
        ("Embedding batch p95 (size, seconds)", "short", [
            (q(0.95, "bunko_embed_batch_size"), "texts"),
            (q(0.95, "bunko_embed_batch_duration_seconds"), "seconds")], "timeseries"),
        ("Bytes accepted", "Bps", [('rate(bunko_ingest_bytes_total[5m])', "bytes/s")], "timeseries"),
        ("Ingest queue", "short", [('sum by (state) (bunko_jobs{queue="ingest"})', "{{state}}")], "timeseries"),
    ]),
    "search": ("bunko — Search and asking", [
        ("Search latency", "s", [
            ('histogram_quantile(0.5, sum by (le) (rate(bunko_http_request_duration_seconds_bucket{route="/api/v1/search"}[5m])))', "p50"),
            ('histogram_quantile(0.99, sum by (le) (rate(bunko_http_request_duration_seconds_bucket{route="/api/v1/search"}[5m])))', "p99")], "timeseries"),
        ("Index latency by mode (p95)", "s", [
            ('histogram_quantile(0.95, sum by (le, mode) (rate(bunko_search_duration_seconds_bucket[5m])))', "{{mode}}")], "timeseries"),
        ("Empty or unavailable halves", "short", [
            ('sum by (leg, status) (increase(bunko_search_legs_total{status!="ok"}[1h]))', "{{leg}} {{status}}")], "timeseries"),
        ("Index size", "bytes", [('sum by (index) (bunko_index_size_bytes)', "{{index}}")], "timeseries"),
        ("Chunks indexed", "short", [('max by (index) (bunko_index_chunks)', "{{index}}")], "timeseries"),
        ("Searches per second", "reqps", [
            ('sum by (status) (rate(bunko_http_requests_total{route="/api/v1/search"}[5m]))', "{{status}}")], "timeseries"),
        ("Answers by kind", "short", [
            ('sum by (kind) (increase(bunko_rag_answers_total[1h]))', "{{kind}}")], "timeseries"),
        ("Citations by outcome", "short", [
            ('sum by (outcome) (increase(bunko_rag_citations_total[1h]))', "{{outcome}}")], "timeseries"),
        ("Summaries", "short", [
            ('sum by (outcome) (increase(bunko_summaries_total[1h]))', "{{outcome}}")], "timeseries"),
        ("Supported citation ratio", "percentunit", [
            ('sum(increase(bunko_rag_citations_total{outcome="supported"}[1h])) / clamp_min(sum(increase(bunko_rag_citations_total[1h])), 1e-9)', "supported")], "stat"),
    ]),
    "llm": ("bunko — LLM gateway", [
        ("Calls by model and outcome", "reqps", [
            ('sum by (model, outcome) (rate(bunko_llm_requests_total[5m]))', "{{model}} {{outcome}}")], "timeseries"),
        ("Tokens per second", "short", [
            ('sum by (model, direction) (rate(bunko_llm_tokens_total[5m]))', "{{model}} {{direction}}")], "timeseries"),
        ("Cost per hour (USD)", "currencyUSD", [
            ('sum by (model) (increase(bunko_llm_cost_usd_total[1h]))', "{{model}}")], "timeseries"),
        ("Cost per day by user (top 10)", "currencyUSD", [
            ('topk(10, sum by (user_id) (increase(bunko_llm_user_cost_usd_total[1d])))', "{{user_id}}")], "table"),
        ("Tokens per day by project", "short", [
            ('sum by (project_id) (increase(bunko_llm_user_tokens_total[1d]))', "{{project_id}}")], "timeseries"),
        ("Time to first token p95", "s", [
            ('histogram_quantile(0.95, sum by (le, model) (rate(bunko_llm_time_to_first_token_seconds_bucket[5m])))', "{{model}}")], "timeseries"),
        ("Request duration p95", "s", [
            ('histogram_quantile(0.95, sum by (le, model) (rate(bunko_llm_request_duration_seconds_bucket[5m])))', "{{model}}")], "timeseries"),
        ("Gateway overhead p99", "s", [
            ('histogram_quantile(0.99, sum by (le) (rate(bunko_gateway_overhead_seconds_bucket[5m])))', "p99")], "timeseries"),
        ("Breaker state (0 closed, 1 open, 2 half-open)", "short", [
            ('max by (provider) (bunko_llm_breaker_state)', "{{provider}}")], "timeseries"),
        ("Answer cache", "reqps", [
            ('sum by (result) (rate(bunko_llm_cache_requests_total[5m]))', "{{result}}")], "timeseries"),
        ("Quota events", "short", [
            ('sum by (event) (increase(bunko_llm_quota_events_total[1h]))', "{{event}}")], "timeseries"),
    ]),
    "jobs": ("bunko — Jobs, scheduler, crawls and backups", [
        ("Jobs by queue and state", "short", [('sum by (queue, state) (bunko_jobs)', "{{queue}} {{state}}")], "timeseries"),
        ("Attempt duration p95", "s", [
            ('histogram_quantile(0.95, sum by (le, kind) (rate(bunko_job_duration_seconds_bucket[15m])))', "{{kind}}")], "timeseries"),
        ("Attempts by outcome", "short", [
            ('sum by (kind, outcome) (increase(bunko_job_duration_seconds_count[1h]))', "{{kind}} {{outcome}}")], "timeseries"),
        ("Failures by code", "short", [
            ('sum by (queue, code) (increase(bunko_job_failures_total[1h]))', "{{queue}} {{code}}")], "timeseries"),
        ("Schedules: time to next run", "s", [
            ('max by (schedule) (bunko_schedule_next_run_timestamp_seconds) - time()', "{{schedule}}")], "table"),
        ("Schedules: last outcome", "short", [
            ('max by (schedule, outcome) (bunko_schedule_last_outcome) == 1', "{{schedule}} {{outcome}}")], "table"),
        ("Crawled items by source and outcome", "short", [
            ('sum by (source, outcome) (increase(bunko_crawl_items_total[1h]))', "{{source}} {{outcome}}")], "timeseries"),
        ("Crawls by source and outcome", "short", [
            ('sum by (source, outcome) (increase(bunko_crawl_runs_total[6h]))', "{{source}} {{outcome}}")], "table"),
        ("Requests to sources", "reqps", [
            ('sum by (source) (rate(bunko_crawl_requests_total[5m]))', "{{source}}")], "timeseries"),
        ("Age of the last backup", "s", [
            ('time() - max(bunko_backup_last_success_timestamp_seconds)', "age")], "stat"),
        ("Last backup size and duration", "short", [
            ('max(bunko_backup_last_size_bytes)', "bytes"),
            ('max(bunko_backup_last_duration_seconds)', "seconds")], "stat"),
    ]),
    "resources": ("bunko — Resources", [
        ("bunko resident memory", "bytes", [('process_resident_memory_bytes{job="bunko"}', "{{instance}}")], "timeseries"),
        ("bunko CPU", "percentunit", [('rate(process_cpu_seconds_total{job="bunko"}[5m])', "{{instance}}")], "timeseries"),
        ("bunko open files", "short", [('process_open_fds{job="bunko"}', "{{instance}}")], "timeseries"),
        ("Container CPU (cAdvisor)", "percentunit", [
            ('sum by (name) (rate(container_cpu_usage_seconds_total{name!=""}[5m]))', "{{name}}")], "timeseries"),
        ("Container memory (cAdvisor)", "bytes", [
            ('sum by (name) (container_memory_working_set_bytes{name!=""})', "{{name}}")], "timeseries"),
        ("Disk free (node exporter)", "percentunit", [
            ('node_filesystem_avail_bytes{fstype!~"tmpfs|overlay|squashfs"} / node_filesystem_size_bytes{fstype!~"tmpfs|overlay|squashfs"}', "{{mountpoint}}")], "timeseries"),
        ("Host load (node exporter)", "short", [('node_load1', "{{instance}}")], "timeseries"),
    ]),
    "availability": ("bunko — Availability", [
        ("Scrape up", "short", [('up{job="bunko"}', "{{instance}}")], "timeseries"),
        ("Probes (blackbox)", "short", [('probe_success{job="blackbox-http"}', "{{instance}}")], "timeseries"),
        ("Probe duration (blackbox)", "s", [('probe_duration_seconds{job="blackbox-http"}', "{{instance}}")], "timeseries"),
        ("Certificate days left", "d", [
            ('(probe_ssl_earliest_cert_expiry{job="blackbox-tls"} - time()) / 86400', "{{instance}}")], "stat"),
    ]),
}


def panel(i, title, unit, targets, kind):
    return {
        "id": i + 1,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + j), "datasource": DS, "expr": e, "legendFormat": legend}
            for j, (e, legend) in enumerate(targets)
        ],
    }


def dashboard(uid, title, panels):
    return {
        "uid": f"bunko-{uid}",
        "title": title,
        "tags": ["bunko"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "editable": False,
        "panels": [panel(i, *p) for i, p in enumerate(panels)],
    }


def render():
    return {f"{uid}.json": json.dumps(dashboard(uid, t, ps), indent=2, ensure_ascii=False) + "\n"
            for uid, (t, ps) in DASHBOARDS.items()}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(OUT / name)
