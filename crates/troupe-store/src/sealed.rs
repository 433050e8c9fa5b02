//! What is kept sealed with the server's key, for the two operations that change it in bulk:
//! rotating the key (every sealed text read and written back sealed with the new one) and
//! moving a secret out of a git project's URL into a credential.

use crate::StoreResult;
use async_trait::async_trait;
use troupe_core::credential::{Credential, SealedCredential};
use troupe_core::project::ProjectSource;

/// A column holding sealed texts, and how they are held there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealedColumn {
    /// `credentials.sealed`: one sealed text.
    Credentials,
    /// `executions.sealed_secrets`: one sealed text (or NULL).
    ExecutionSecrets,
    /// `templates.notify`: a JSON list of sealed notification targets.
    TemplateNotify,
    /// `notifications.target`: one sealed notification target, as JSON.
    NotificationTargets,
    /// `runs.options`: JSON whose extra vars may hold `troupe-sealed:v1:` strings.
    RunOptions,
    /// `templates.defaults`: run options as JSON, held like `runs.options`.
    TemplateDefaults,
}

impl SealedColumn {
    /// Every column holding sealed texts.
    pub const ALL: [SealedColumn; 6] = [
        SealedColumn::Credentials,
        SealedColumn::ExecutionSecrets,
        SealedColumn::TemplateNotify,
        SealedColumn::NotificationTargets,
        SealedColumn::RunOptions,
        SealedColumn::TemplateDefaults,
    ];

    /// Its table.
    pub fn table(self) -> &'static str {
        match self {
            SealedColumn::Credentials => "credentials",
            SealedColumn::ExecutionSecrets => "executions",
            SealedColumn::TemplateNotify => "templates",
            SealedColumn::NotificationTargets => "notifications",
            SealedColumn::RunOptions => "runs",
            SealedColumn::TemplateDefaults => "templates",
        }
    }

    /// Its column.
    pub fn column(self) -> &'static str {
        match self {
            SealedColumn::Credentials => "sealed",
            SealedColumn::ExecutionSecrets => "sealed_secrets",
            SealedColumn::TemplateNotify => "notify",
            SealedColumn::NotificationTargets => "target",
            SealedColumn::RunOptions => "options",
            SealedColumn::TemplateDefaults => "defaults",
        }
    }
}

impl std::fmt::Display for SealedColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.table(), self.column())
    }
}

/// The text of one row's sealed column. Its `Debug` shows the id only.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedText {
    /// The row's id.
    pub id: i64,
    /// The column's text, as stored.
    pub text: String,
}

impl std::fmt::Debug for SealedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedText({})", self.id)
    }
}

/// A row's sealed column to replace: `old` (as read) with `new`.
#[derive(Clone, PartialEq, Eq)]
pub struct Resealed {
    /// The row's id.
    pub id: i64,
    /// The text read.
    pub old: String,
    /// The text to write instead.
    pub new: String,
}

impl std::fmt::Debug for Resealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Resealed({})", self.id)
    }
}

/// Bulk changes of sealed texts.
#[async_trait]
pub trait SealedStore {
    /// Rows of `column` that may hold sealed texts, with an id above `after`, by id, at most
    /// `limit`.
    async fn sealed_texts(
        &self,
        column: SealedColumn,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<SealedText>>;
    /// Replaces the texts of `rows` in one transaction; a row whose text is no longer `old`
    /// is left as it is. Answers how many were replaced.
    async fn replace_sealed(&self, column: SealedColumn, rows: &[Resealed]) -> StoreResult<u64>;
    /// In one transaction: stores `credential` and gives project `project_id` the source
    /// `new` instead of `old`. `None` (and nothing stored) when the project's source is no
    /// longer `old` (another replica moved it first); `Conflict` when the credential's name
    /// is taken; `NotFound` for no such project.
    async fn move_git_secret(
        &self,
        project_id: i64,
        old: &ProjectSource,
        new: &ProjectSource,
        credential: &SealedCredential,
    ) -> StoreResult<Option<Credential>>;
}
