use super::{SqliteStore, constraint_err, db_err, to_page};
use async_trait::async_trait;
use bunko_core::ids::{new_id, now_ms};
use bunko_core::ports::{
    NewProject, Page, PageRequest, Project, ProjectQueries, StoreError, StoreResult,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

pub(crate) fn row_to_project(r: &SqliteRow) -> StoreResult<Project> {
    let id: String = r.try_get("id").map_err(db_err)?;
    Ok(Project {
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Backend(e.to_string()))?,
        name: r.try_get("name").map_err(db_err)?,
        slug: r.try_get("slug").map_err(db_err)?,
        description: r.try_get("description").map_err(db_err)?,
        created_at_ms: r.try_get("created_at").map_err(db_err)?,
        updated_at_ms: r.try_get("updated_at").map_err(db_err)?,
    })
}

#[async_trait]
impl ProjectQueries for SqliteStore {
    async fn create_project(&self, p: NewProject) -> StoreResult<Project> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO projects (id, name, slug, description, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(new_id().to_string())
        .bind(&p.name)
        .bind(&p.slug)
        .bind(&p.description)
        .bind(now)
        .bind(now)
        .fetch_one(&self.writer)
        .await
        .map_err(|e| {
            constraint_err(
                e,
                || format!("a project with slug `{}` already exists", p.slug),
                "",
            )
        })?;
        row_to_project(&row)
    }

    async fn get_project(&self, id_or_slug: &str) -> StoreResult<Option<Project>> {
        sqlx::query("SELECT * FROM projects WHERE id = ? OR slug = ?")
            .bind(id_or_slug)
            .bind(id_or_slug)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(row_to_project)
            .transpose()
    }

    async fn delete_project(&self, id: Uuid) -> StoreResult<bool> {
        // Memberships and project-bound keys go with it (ON DELETE CASCADE).
        let r = sqlx::query("DELETE FROM projects WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn list_projects(&self, page: PageRequest) -> StoreResult<Page<Project>> {
        let rows = sqlx::query(
            "SELECT * FROM projects WHERE (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?",
        )
        .bind(page.before.map(|u| u.to_string()))
        .bind(page.before.map(|u| u.to_string()))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        to_page(&rows, page.limit, row_to_project, |p| p.id)
    }
}

/// Trims the look-ahead row and returns the cursor for the next page, if there is one.
pub(crate) fn paginate<T>(
    items: &mut Vec<T>,
    limit: u32,
    id: impl Fn(&T) -> Uuid,
) -> Option<String> {
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|t| id(t).to_string())
    } else {
        None
    }
}
