//! Who may do what: global roles, project roles, API-key scopes, the authenticated
//! [`Principal`], and the one function that decides a permission ([`Principal::allows`]).

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalRole {
    Admin,
    Member,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectRole {
    Viewer,
    Editor,
    Owner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Disabled,
}

/// What an API key may be used for (a user session may do everything its roles allow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Search,
    Ask,
    Ingest,
    Gateway,
    Admin,
}

macro_rules! str_enum {
    ($t:ty { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $t {
            pub const ALL: &'static [$t] = &[$(<$t>::$v),+];
            pub fn as_str(self) -> &'static str { match self { $(<$t>::$v => $s),+ } }
            pub fn parse(s: &str) -> Option<Self> { match s { $($s => Some(<$t>::$v),)+ _ => None } }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

str_enum!(GlobalRole { Admin => "admin", Member => "member" });
str_enum!(ProjectRole { Viewer => "viewer", Editor => "editor", Owner => "owner" });
str_enum!(UserStatus { Active => "active", Disabled => "disabled" });
str_enum!(Scope { Read => "read", Search => "search", Ask => "ask", Ingest => "ingest", Gateway => "gateway", Admin => "admin" });

impl Scope {
    /// The least project role that may use this scope inside a project.
    pub fn min_project_role(self) -> ProjectRole {
        match self {
            Scope::Read | Scope::Search | Scope::Ask | Scope::Gateway => ProjectRole::Viewer,
            Scope::Ingest => ProjectRole::Editor,
            Scope::Admin => ProjectRole::Owner,
        }
    }

    /// Parses `search,ask` (deduplicated, sorted).
    pub fn parse_list(s: &str) -> Result<Vec<Scope>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let scope = Scope::parse(part).ok_or_else(|| {
                format!(
                    "unknown scope `{part}`; scopes are read, search, ask, ingest, gateway, admin"
                )
            })?;
            out.push(scope);
        }
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err("give at least one scope".into());
        }
        Ok(out)
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A signed access token from a login (its session can be revoked at once).
    Session { session_id: Uuid },
    /// An API key: only its scopes, and only its project when it has one.
    ApiKey {
        key_id: Uuid,
        scopes: Vec<Scope>,
        project_id: Option<Uuid>,
    },
}

/// An authenticated caller. Built per request from a valid, current credential of an active user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
    pub email: String,
    pub role: GlobalRole,
    pub credential: Credential,
}

impl Principal {
    /// `user` acting through bunko itself rather than over HTTP — a job they queued, the CLI
    /// on the data dir: the rights of their roles, as a session has (no session exists).
    pub fn in_process(user: crate::ports::User) -> Principal {
        Principal {
            user_id: user.id,
            email: user.email,
            role: user.role,
            credential: Credential::Session {
                session_id: Uuid::nil(),
            },
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == GlobalRole::Admin && self.has_scope(Scope::Admin)
    }

    /// Whether the credential carries `scope` (sessions carry every scope).
    pub fn has_scope(&self, scope: Scope) -> bool {
        match &self.credential {
            Credential::Session { .. } => true,
            Credential::ApiKey { scopes, .. } => scopes.contains(&scope),
        }
    }

    /// A key bound to one project can only reach that project.
    pub fn key_project(&self) -> Option<Uuid> {
        match &self.credential {
            Credential::ApiKey { project_id, .. } => *project_id,
            Credential::Session { .. } => None,
        }
    }

    /// The decision for `scope` inside a project where the user has `membership` (if any).
    pub fn allows(
        &self,
        scope: Scope,
        project_id: Uuid,
        membership: Option<ProjectRole>,
    ) -> Access {
        if self.key_project().is_some_and(|p| p != project_id) {
            return Access::Invisible;
        }
        let role = if self.role == GlobalRole::Admin {
            Some(ProjectRole::Owner)
        } else {
            membership
        };
        let Some(role) = role else {
            return Access::Invisible;
        };
        // A member (or a key acting for one) knows the project exists: a missing scope or a
        // too-small role is a plain 403 there.
        if !self.has_scope(scope) || role < scope.min_project_role() {
            return Access::Denied;
        }
        Access::Allowed
    }

    /// A short label for audit records.
    pub fn label(&self) -> String {
        match &self.credential {
            Credential::Session { .. } => self.email.clone(),
            Credential::ApiKey { key_id, .. } => format!("{} (key {key_id})", self.email),
        }
    }
}

/// The outcome of a permission check. `Invisible` is answered 404 so callers cannot learn
/// that another project's objects exist; `Denied` (403) only where the caller can see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    Denied,
    Invisible,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: GlobalRole) -> Principal {
        Principal {
            user_id: Uuid::now_v7(),
            email: "u@x".into(),
            role,
            credential: Credential::Session {
                session_id: Uuid::now_v7(),
            },
        }
    }

    #[test]
    fn session_permissions_follow_project_roles() {
        let p = Uuid::now_v7();
        let m = user(GlobalRole::Member);
        assert_eq!(m.allows(Scope::Read, p, None), Access::Invisible);
        assert_eq!(
            m.allows(Scope::Read, p, Some(ProjectRole::Viewer)),
            Access::Allowed
        );
        assert_eq!(
            m.allows(Scope::Ingest, p, Some(ProjectRole::Viewer)),
            Access::Denied
        );
        assert_eq!(
            m.allows(Scope::Ingest, p, Some(ProjectRole::Editor)),
            Access::Allowed
        );
        assert_eq!(
            m.allows(Scope::Admin, p, Some(ProjectRole::Editor)),
            Access::Denied
        );
        assert_eq!(
            m.allows(Scope::Admin, p, Some(ProjectRole::Owner)),
            Access::Allowed
        );
        assert_eq!(
            user(GlobalRole::Admin).allows(Scope::Admin, p, None),
            Access::Allowed
        );
    }

    #[test]
    fn keys_are_limited_by_scope_and_project() {
        let p = Uuid::now_v7();
        let other = Uuid::now_v7();
        let key = Principal {
            credential: Credential::ApiKey {
                key_id: Uuid::now_v7(),
                scopes: vec![Scope::Search],
                project_id: Some(p),
            },
            ..user(GlobalRole::Admin)
        };
        assert!(
            !key.is_admin(),
            "an admin's key without the admin scope is not admin"
        );
        assert_eq!(key.allows(Scope::Search, p, None), Access::Allowed);
        assert_eq!(key.allows(Scope::Search, other, None), Access::Invisible);
        assert_eq!(key.allows(Scope::Ingest, p, None), Access::Denied);
        assert_eq!(
            Scope::parse_list("ask, search,ask").unwrap(),
            vec![Scope::Search, Scope::Ask]
        );
        assert!(Scope::parse_list("search,root").is_err());
    }
}
