//! Statements of [`crate::SealedStore`], the same on both backends.

use super::Dialect;
use crate::sealed::SealedColumn;

/// Which rows of `column` may hold sealed texts (`$1`: after this id, `$2`: at most).
pub fn select<D: Dialect>(column: SealedColumn) -> String {
    let col = column.column();
    let filter = match column {
        SealedColumn::Credentials | SealedColumn::NotificationTargets => "1 = 1".to_owned(),
        SealedColumn::ExecutionSecrets => format!("{col} IS NOT NULL"),
        SealedColumn::TemplateNotify => format!("{col} <> '[]'"),
        SealedColumn::RunOptions | SealedColumn::TemplateDefaults => format!(
            "CAST({col} AS TEXT) LIKE '%{}%'",
            troupe_core::redact::SEALED_PREFIX
        ),
    };
    format!(
        "SELECT id, CAST({col} AS TEXT) AS text FROM {} WHERE id > $1 AND {filter} \
         ORDER BY id {}",
        column.table(),
        super::limit("$2")
    )
}

/// Replaces `column` of row `$2` with `$1` if it still is `$3`.
pub fn replace<D: Dialect>(column: SealedColumn) -> String {
    let col = column.column();
    let param = match column {
        SealedColumn::RunOptions | SealedColumn::TemplateDefaults => D::JSON_PARAM,
        _ => "",
    };
    format!(
        "UPDATE {} SET {col} = $1{param} WHERE id = $2 AND CAST({col} AS TEXT) = $3",
        column.table()
    )
}
