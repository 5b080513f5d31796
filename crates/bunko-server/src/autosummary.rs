//! Automatic processing of what sources bring in: a summary of each new document of a source
//! with `summarize = true`, and the daily digest note per project.
//!
//! Summaries are ordinary `document.summarize` jobs run as the service account
//! `autosummary@bunko.local` (made on first use; it has no password and cannot log in), so
//! the gateway meters them like any caller and `crawl.summary_daily_tokens` is a gateway quota
//! on that account: past it, summary jobs fail with `quota_exceeded`, and the next digest
//! enqueues the documents still without a summary again.
//!
//! The digest (`digest.daily`, daily in the maintenance queue, or any `[[schedules]]` entry)
//! writes one note per project listing the documents its sources added on a UTC day — new
//! versions marked, the first sentence of each summary when there is one — tagged `digest`; a
//! second run for the same day replaces its note instead of adding another.

use crate::ingest::Ingest;
use bunko_core::answers::{NewNote, NotePatch};
use bunko_core::config::{Config, QuotaConfig, QuotaScope};
use bunko_core::documents::Document;
use bunko_core::jobs::{JobContext, JobFailure, JobHandler, NewJob};
use bunko_core::ports::{MetaStore, NewUser, PageRequest, StoreError};
use bunko_core::{Code, identity::GlobalRole};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

pub const ACCOUNT: &str = "autosummary@bunko.local";
pub const DIGEST_KIND: &str = "digest.daily";
pub const DIGEST_QUEUE: &str = "maintenance";
pub const DIGEST_TAG: &str = "digest";

/// The gateway quota that holds automatic summaries to `crawl.summary_daily_tokens`.
pub fn quota(config: &Config) -> Option<QuotaConfig> {
    (config.crawl.summary_daily_tokens > 0).then(|| QuotaConfig {
        scope: QuotaScope::User,
        id: ACCOUNT.into(),
        requests_per_min: None,
        tokens_per_min: None,
        tokens_per_day: Some(config.crawl.summary_daily_tokens),
        cost_per_month_usd: None,
        soft_ratio: 0.8,
    })
}

/// The service account, made on first use.
async fn account(store: &dyn MetaStore) -> Result<Uuid, StoreError> {
    if let Some(u) = store.get_user_by_email(ACCOUNT).await? {
        return Ok(u.id);
    }
    match store
        .create_user(NewUser {
            email: ACCOUNT.into(),
            display_name: "Automatic summaries".into(),
            password_hash: None,
            role: GlobalRole::Member,
        })
        .await
    {
        Ok(u) => Ok(u.id),
        // Made by another process meanwhile.
        Err(StoreError::Conflict(_)) => store
            .get_user_by_email(ACCOUNT)
            .await?
            .map(|u| u.id)
            .ok_or_else(|| StoreError::NotFound(ACCOUNT.into())),
        Err(e) => Err(e),
    }
}

/// Whether the document's source asks for summaries (and they are on at all).
async fn wants_summary(ingest: &Ingest, doc: &Document) -> Result<bool, StoreError> {
    if doc.origin.is_none() || ingest.config.crawl.summary_daily_tokens == 0 {
        return Ok(false);
    }
    Ok(ingest
        .store
        .get_source(&doc.source)
        .await?
        .is_some_and(|s| s.def.summarize))
}

/// Enqueues the automatic summary of a document that just became ready, when its source asks
/// for one; `day` keys the job so one day enqueues it once.
pub async fn request(
    ingest: &Ingest,
    doc: &Document,
    day: &str,
) -> Result<Option<Uuid>, StoreError> {
    if !wants_summary(ingest, doc).await? {
        return Ok(None);
    }
    let user = account(ingest.store.as_ref()).await?;
    let mut job = NewJob::new(
        crate::summary::QUEUE,
        crate::summary::KIND,
        json!({ "document_id": doc.id, "user_id": user,
                "model": ingest.config.crawl.summary_model, "automatic": true }),
    );
    job.max_attempts = 3;
    job.idempotency_key = Some(format!("autosummary:{}:{day}", doc.id));
    Ok(Some(ingest.store.enqueue(job).await?.id))
}

pub struct Digest(pub Arc<Ingest>);

#[async_trait::async_trait]
impl JobHandler for Digest {
    async fn run(&self, ctx: JobContext) -> Result<Option<Value>, JobFailure> {
        let day = match ctx.job.payload.get("day").and_then(Value::as_str) {
            Some(d) => d.parse::<jiff::civil::Date>().map_err(|_| {
                JobFailure::permanent(Code::InvalidInput, format!("day `{d}` is not YYYY-MM-DD"))
            })?,
            None => jiff::Timestamp::now()
                .to_zoned(jiff::tz::TimeZone::UTC)
                .date()
                .yesterday()
                .map_err(|e| JobFailure::permanent(Code::Internal, e.to_string()))?,
        };
        digest(&self.0, day)
            .await
            .map(Some)
            .map_err(|e| JobFailure::retryable(Code::Unavailable, format!("storage: {e}")))
    }
}

fn first_sentence(text: &str) -> String {
    let t: String = text
        .split_inclusive(['。', '.', '\n'])
        .next()
        .unwrap_or(text)
        .chars()
        .filter(|c| *c != '\n')
        .collect();
    // Without citation markers: the digest quotes, it does not cite.
    let mut out = String::new();
    let mut rest = t.as_str();
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        match rest[i..].find(']') {
            Some(j) if rest[i + 1..i + j].chars().all(|c| c.is_ascii_digit()) => {
                rest = &rest[i + j + 1..]
            }
            _ => {
                out.push('[');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out.trim().to_owned()
}

/// Writes the digest notes for `day` (UTC); returns what it did.
pub async fn digest(ingest: &Ingest, day: jiff::civil::Date) -> Result<Value, StoreError> {
    let store = ingest.store.as_ref();
    let tz = jiff::tz::TimeZone::UTC;
    let start = day
        .to_zoned(tz.clone())
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    let end = start
        .tomorrow()
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    let docs = store
        .documents_added_between(
            start.timestamp().as_millisecond(),
            end.timestamp().as_millisecond(),
        )
        .await?;
    // Project → source → documents.
    let mut by_project: BTreeMap<Uuid, BTreeMap<String, Vec<&Document>>> = BTreeMap::new();
    for d in docs.iter().filter(|d| d.origin.is_some()) {
        by_project
            .entry(d.project_id)
            .or_default()
            .entry(d.source.clone())
            .or_default()
            .push(d);
    }
    let author = account(store).await.ok();
    let title = format!("Digest {day}");
    let mut notes = 0;
    let mut summaries_requested = 0;
    for (project, sources) in &by_project {
        let total: usize = sources.values().map(Vec::len).sum();
        let mut body = format!(
            "{total} document{} arrived on {day} (UTC).\n",
            if total == 1 { "" } else { "s" }
        );
        for (source, list) in sources {
            body.push_str(&format!("\n## {source} — {}\n\n", list.len()));
            for d in list {
                let o = d.origin.as_ref();
                let mut line = format!(
                    "- [{}](/api/v1/documents/{})",
                    d.title.replace(['[', ']'], ""),
                    d.id
                );
                if let Some(o) = o {
                    let older = store
                        .document_versions(*project, &o.external_id)
                        .await?
                        .len()
                        > 1;
                    if older {
                        line.push_str(&format!(
                            " — new version {}",
                            o.version.as_deref().unwrap_or("")
                        ));
                    }
                    if let Some(from) = &o.valid_from {
                        line.push_str(&format!(" (valid from {from})"));
                    }
                }
                line.push_str(&format!(" — {}", d.status.as_str()));
                let summary = store.latest_summary(d.id).await?;
                if let Some(s) = &summary {
                    line.push_str(&format!("\n  {}", first_sentence(&s.text)));
                }
                // Still without a summary (that day's budget ran out): asked for again, once
                // per day the digest runs.
                if summary.is_none()
                    && d.status == bunko_core::documents::DocStatus::Ready
                    && request(ingest, d, &bunko_ingest::crawl::today())
                        .await?
                        .is_some()
                {
                    summaries_requested += 1;
                }
                body.push_str(&line);
                body.push('\n');
            }
        }
        let existing = store
            .list_notes(
                *project,
                Some(DIGEST_TAG),
                PageRequest::new(Some(100), None)
                    .map_err(|e| StoreError::Backend(e.to_string()))?,
            )
            .await?
            .items
            .into_iter()
            .find(|n| n.title == title);
        match existing {
            Some(n) => {
                store
                    .update_note(
                        n.id,
                        NotePatch {
                            body: Some(body),
                            ..Default::default()
                        },
                    )
                    .await?;
            }
            None => {
                store
                    .create_note(NewNote {
                        project_id: *project,
                        title: title.clone(),
                        body,
                        tags: vec![DIGEST_TAG.into()],
                        author_id: author,
                        citations: vec![],
                    })
                    .await?;
            }
        }
        notes += 1;
    }
    Ok(
        json!({ "day": day.to_string(), "notes": notes, "documents": docs.iter().filter(|d| d.origin.is_some()).count(), "summaries_requested": summaries_requested }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sentences_without_markers() {
        assert_eq!(
            first_sentence("本法は行政の効率化を図る[1]。次の文。"),
            "本法は行政の効率化を図る。"
        );
        assert_eq!(first_sentence("A study [2] of B. More."), "A study  of B.");
        assert_eq!(first_sentence("Keeps [x] brackets"), "Keeps [x] brackets");
    }
}
