//! What asking produces and keeps: conversations (the turns a follow-up question carries),
//! document summaries (one row per generation; the latest is served) and project notes
//! (Markdown with citations that link to document pages). The port is [`AnswerQueries`].

use crate::ports::{Page, PageRequest, StoreResult};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One question and the answer given, in a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub question: String,
    pub answer: String,
    pub at_ms: i64,
}

/// A cited page: where a note's or a summary's `[n]` points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageRef {
    pub n: usize,
    pub document_id: Uuid,
    pub title: String,
    /// 1-based.
    pub page: u32,
    #[serde(default)]
    pub page_end: u32,
    #[serde(default)]
    pub section: String,
}

/// The summary of one stretch of a document (the "map" step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartSummary {
    pub section: String,
    pub page_start: u32,
    pub page_end: u32,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub id: Uuid,
    pub document_id: Uuid,
    /// `ja` or `en`.
    pub language: String,
    /// The model alias that wrote it.
    pub model: String,
    /// The summary; `[n]` markers point at `citations`.
    pub text: String,
    /// The parts summarised first, in document order.
    pub parts: Vec<PartSummary>,
    /// `[n]` → the pages of the part it summarises.
    pub citations: Vec<PageRef>,
    /// Parts that came out of the passages' own sentences (the model wrote nothing usable).
    pub extractive_parts: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub job_id: Option<Uuid>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Note {
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    /// Markdown.
    pub body: String,
    pub tags: Vec<String>,
    /// The user who wrote it (absent once that user is deleted).
    pub author_id: Option<Uuid>,
    pub citations: Vec<PageRef>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewNote {
    pub project_id: Uuid,
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
    pub author_id: Option<Uuid>,
    pub citations: Vec<PageRef>,
}

/// Fields to change; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct NotePatch {
    pub title: Option<String>,
    pub body: Option<String>,
    pub tags: Option<Vec<String>>,
    pub citations: Option<Vec<PageRef>>,
}

#[async_trait]
pub trait AnswerQueries: Send + Sync {
    /// A new, empty conversation of `user`.
    async fn create_conversation(&self, user: Uuid) -> StoreResult<Uuid>;
    /// Who owns it, if it exists.
    async fn conversation_owner(&self, id: Uuid) -> StoreResult<Option<Uuid>>;
    /// The last `limit` turns, oldest first.
    async fn conversation_turns(&self, id: Uuid, limit: u32) -> StoreResult<Vec<Turn>>;
    /// Fails with `NotFound` when the conversation is gone.
    async fn append_turn(&self, id: Uuid, turn: &Turn) -> StoreResult<()>;

    /// Stores a generated summary (the earlier ones stay).
    async fn put_summary(&self, s: &Summary) -> StoreResult<()>;
    /// The newest summary of a document.
    async fn latest_summary(&self, document: Uuid) -> StoreResult<Option<Summary>>;

    /// Fails with `NotFound` when the project does not exist.
    async fn create_note(&self, n: NewNote) -> StoreResult<Note>;
    async fn get_note(&self, id: Uuid) -> StoreResult<Option<Note>>;
    /// Newest first; only notes carrying `tag` when given.
    async fn list_notes(
        &self,
        project: Uuid,
        tag: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<Note>>;
    async fn update_note(&self, id: Uuid, patch: NotePatch) -> StoreResult<Option<Note>>;
    async fn delete_note(&self, id: Uuid) -> StoreResult<bool>;
}
