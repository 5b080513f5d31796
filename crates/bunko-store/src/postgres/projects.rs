use super::{PgStore, constraint_err, db_err};
use crate::rows;
use async_trait::async_trait;
use bunko_core::ids::{new_id, now_ms};
use bunko_core::ports::{NewProject, Page, PageRequest, Project, ProjectQueries, StoreResult};
use uuid::Uuid;

#[async_trait]
impl ProjectQueries for PgStore {
    async fn create_project(&self, p: NewProject) -> StoreResult<Project> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO projects (id, name, slug, description, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING *",
        )
        .bind(new_id().to_string())
        .bind(&p.name)
        .bind(&p.slug)
        .bind(&p.description)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            constraint_err(
                e,
                || format!("a project with slug `{}` already exists", p.slug),
                "",
            )
        })?;
        rows::project(&row)
    }

    async fn get_project(&self, id_or_slug: &str) -> StoreResult<Option<Project>> {
        sqlx::query("SELECT * FROM projects WHERE id = $1 OR slug = $1")
            .bind(id_or_slug)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(rows::project)
            .transpose()
    }

    async fn delete_project(&self, id: Uuid) -> StoreResult<bool> {
        // Memberships and project-bound keys go with it (ON DELETE CASCADE).
        let r = sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn list_projects(&self, page: PageRequest) -> StoreResult<Page<Project>> {
        let rows = sqlx::query(
            "SELECT * FROM projects WHERE ($1::text IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(page.before.map(|u| u.to_string()))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows::to_page(&rows, page.limit, rows::project, |p| p.id)
    }
}
