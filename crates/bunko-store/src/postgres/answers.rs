use super::{PgStore, constraint_err, db_err};
use crate::rows;
use async_trait::async_trait;
use bunko_core::answers::{AnswerQueries, NewNote, Note, NotePatch, Summary, Turn};
use bunko_core::ids::{new_id, now_ms};
use bunko_core::ports::{Page, PageRequest, StoreError, StoreResult};
use uuid::Uuid;

#[async_trait]
impl AnswerQueries for PgStore {
    async fn create_conversation(&self, id: Uuid, user: Uuid) -> StoreResult<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO conversations (id, user_id, created_at, updated_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.to_string())
        .bind(user.to_string())
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| constraint_err(e, || format!("conversation {id} exists"), "user"))?;
        Ok(())
    }

    async fn conversation_owner(&self, id: Uuid) -> StoreResult<Option<Uuid>> {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT user_id FROM conversations WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        owner.as_deref().map(rows::parse_uuid).transpose()
    }

    async fn conversation_turns(&self, id: Uuid, limit: u32) -> StoreResult<Vec<Turn>> {
        let rows = sqlx::query(
            "SELECT question, answer, at FROM conversation_turns WHERE conversation_id = $1
             ORDER BY seq DESC LIMIT $2",
        )
        .bind(id.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let mut turns = rows
            .iter()
            .map(rows::turn)
            .collect::<StoreResult<Vec<_>>>()?;
        turns.reverse();
        Ok(turns)
    }

    async fn append_turn(&self, id: Uuid, turn: &Turn) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let r = sqlx::query("UPDATE conversations SET updated_at = $1 WHERE id = $2")
            .bind(turn.at_ms)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound("conversation".into()));
        }
        sqlx::query(
            "INSERT INTO conversation_turns (conversation_id, seq, question, answer, at)
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM conversation_turns
                          WHERE conversation_id = $1), $2, $3, $4)",
        )
        .bind(id.to_string())
        .bind(&turn.question)
        .bind(&turn.answer)
        .bind(turn.at_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn put_summary(&self, s: &Summary) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO summaries (id, document_id, created_at, body) VALUES ($1, $2, $3, $4)",
        )
        .bind(s.id.to_string())
        .bind(s.document_id.to_string())
        .bind(s.created_at_ms)
        .bind(rows::json(s)?)
        .execute(&self.pool)
        .await
        .map_err(|e| constraint_err(e, || "summary exists".into(), "document"))?;
        Ok(())
    }

    async fn latest_summary(&self, document: Uuid) -> StoreResult<Option<Summary>> {
        let body: Option<String> = sqlx::query_scalar(
            "SELECT body FROM summaries WHERE document_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(document.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        body.as_deref().map(rows::unjson).transpose()
    }

    async fn create_note(&self, n: NewNote) -> StoreResult<Note> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO notes (id, project_id, title, body, tags, author_id, citations, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
        )
        .bind(new_id().to_string())
        .bind(n.project_id.to_string())
        .bind(&n.title)
        .bind(&n.body)
        .bind(rows::json(&n.tags)?)
        .bind(n.author_id.map(|a| a.to_string()))
        .bind(rows::json(&n.citations)?)
        .bind(now)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| constraint_err(e, String::new, "project"))?;
        rows::note(&row)
    }

    async fn get_note(&self, id: Uuid) -> StoreResult<Option<Note>> {
        sqlx::query("SELECT * FROM notes WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(rows::note)
            .transpose()
    }

    async fn list_notes(
        &self,
        project: Uuid,
        tag: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<Note>> {
        let before = page.before.map(|u| u.to_string());
        let rows = sqlx::query(
            "SELECT * FROM notes WHERE project_id = $1 AND ($2::text IS NULL OR id < $2)
               AND ($3::text IS NULL OR EXISTS
                    (SELECT 1 FROM jsonb_array_elements_text(notes.tags::jsonb) t WHERE t = $3))
             ORDER BY id DESC LIMIT $4",
        )
        .bind(project.to_string())
        .bind(&before)
        .bind(tag)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows::to_page(&rows, page.limit, rows::note, |n| n.id)
    }

    async fn update_note(&self, id: Uuid, patch: NotePatch) -> StoreResult<Option<Note>> {
        let tags = patch.tags.as_ref().map(rows::json).transpose()?;
        let citations = patch.citations.as_ref().map(rows::json).transpose()?;
        sqlx::query(
            "UPDATE notes SET title = COALESCE($1::text, title), body = COALESCE($2::text, body),
                tags = COALESCE($3::text, tags), citations = COALESCE($4::text, citations), updated_at = $5
             WHERE id = $6 RETURNING *",
        )
        .bind(patch.title)
        .bind(patch.body)
        .bind(tags)
        .bind(citations)
        .bind(now_ms())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?
        .as_ref()
        .map(rows::note)
        .transpose()
    }

    async fn delete_note(&self, id: Uuid) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM notes WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }
}
