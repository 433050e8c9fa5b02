//! Schedules: a cron expression in a time zone that starts a flow, a template or a playbook.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use troupe_core::flow::{MissedFires, Schedule, ScheduleTarget};

/// The body of `POST /api/v1/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// Its name, unique: 1 to 100 letters, digits, `.`, `_` or `-`.
    pub name: String,
    /// A cron expression: 5 fields (`0 2 * * *`), or 6 with seconds first (`*/10 * * * * *`),
    /// or `@daily`, `@hourly`...
    pub cron: String,
    /// The IANA time zone the expression is read in (`UTC` when absent).
    #[serde(default = "utc")]
    pub timezone: String,
    /// What it starts: `{"kind": "flow", "flow", "inputs"}`, `{"kind": "template", "template",
    /// "options"}` or `{"kind": "playbook", "project", "playbook", "inventory", "options"}`.
    pub target: ScheduleTarget,
    /// What happens to fires missed while no troupe was running: `skip` (the default) or
    /// `once`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<MissedFires>,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// A schedule, with its next few fire times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleView {
    /// The schedule.
    #[serde(flatten)]
    pub schedule: Schedule,
    /// Its next times, from `next_fire_at` on (at most 5).
    pub next_fires: Vec<DateTime<Utc>>,
}

/// The answer of `GET /api/v1/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleList {
    /// Every schedule, by name.
    pub schedules: Vec<ScheduleView>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schedule_body_defaults_to_utc_and_names_its_target_kind() -> Result<(), serde_json::Error>
    {
        let body: CreateSchedule = serde_json::from_value(json!({
            "name": "nightly", "cron": "0 2 * * *",
            "target": {"kind": "flow", "flow": "backup", "inputs": {"full": true}}
        }))?;
        assert_eq!(body.timezone, "UTC");
        assert_eq!(body.missed, None);
        assert!(matches!(body.target, ScheduleTarget::Flow { ref flow, .. } if flow == "backup"));
        let unknown = serde_json::from_value::<CreateSchedule>(json!({
            "name": "x", "cron": "* * * * *", "target": {"kind": "lambda"}
        }));
        assert!(unknown.is_err());
        Ok(())
    }
}
