//! Leader leases' statements and row mapping, the same on both backends.

use super::{Dialect, get};
use crate::{SourceLease, StoreResult};

/// Takes a lease: `$1` name, `$2` holder, `$3` now, `$4` until. Returns a row when `$2` holds
/// it afterwards (it was free, expired, or already `$2`'s).
pub const ACQUIRE_SOURCE_LEASE: &str = "INSERT INTO source_leases (name, holder, expires_at) \
     VALUES ($1, $2, $4) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
     WHERE source_leases.holder = excluded.holder OR source_leases.expires_at <= $3 \
     RETURNING name";

/// Renews a lease its holder still has: `$1` name, `$2` holder, `$3` until.
pub const RENEW_SOURCE_LEASE: &str = "UPDATE source_leases SET expires_at = $3 \
     WHERE name = $1 AND holder = $2 RETURNING name";

/// Gives a lease up: `$1` name, `$2` holder.
pub const RELEASE_SOURCE_LEASE: &str = "DELETE FROM source_leases WHERE name = $1 AND holder = $2";

/// Every lease.
pub const LIST_SOURCE_LEASES: &str =
    "SELECT name, holder, expires_at FROM source_leases ORDER BY name";

/// A lease from a row of [`LIST_SOURCE_LEASES`].
pub fn lease_from<D: Dialect>(row: &D::Row) -> StoreResult<SourceLease> {
    Ok(SourceLease {
        name: get(row, "name")?,
        holder: get(row, "holder")?,
        expires_at: D::time(row, "expires_at")?,
    })
}
