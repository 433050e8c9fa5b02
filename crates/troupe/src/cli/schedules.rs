//! `troupe schedules list|show|create|delete`: cron schedules that start a flow, a template or
//! a playbook.

use crate::cli::executions::parse_inputs;
use crate::cli::print_json;
use crate::cli::run::parse_extra_vars;
use crate::client::Client;
use clap::Subcommand;
use serde_json::{Map, Value};
use troupe_wire::schedules::{
    CreateSchedule, MissedFires, ScheduleList, ScheduleTarget, ScheduleView,
};

/// Create, list and delete schedules.
#[derive(Debug, Subcommand)]
pub enum SchedulesCmd {
    /// Every schedule: its cron, next fire and what its last fire started.
    List {
        /// Print the JSON the API answers.
        #[arg(long)]
        json: bool,
    },
    /// One schedule (by id or name), with its next five fire times.
    Show {
        /// The schedule's id or name.
        schedule: String,
        /// Print the JSON the API answers.
        #[arg(long)]
        json: bool,
    },
    /// Create a schedule that starts a flow (`--flow NAME -i k=v`), a template (`--template
    /// NAME`) or a playbook (`--project P --playbook X --inventory I`).
    Create(Box<CreateArgs>),
    /// Delete a schedule (by id or name): it fires no more.
    Delete {
        /// The schedule's id or name.
        schedule: String,
    },
}

/// What `troupe schedules create` takes.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Its name.
    #[arg(long)]
    pub name: String,
    /// A cron expression: 5 fields, or 6 with seconds first; `@daily`...
    #[arg(long)]
    pub cron: String,
    /// The IANA time zone the expression is read in.
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
    /// Fires missed while no troupe was running: skip them, or fire once on start.
    #[arg(long, value_parser = ["skip", "once"], default_value = "skip")]
    pub missed: String,
    /// Start an execution of this flow.
    #[arg(long, conflicts_with_all = ["template", "project", "playbook", "inventory"])]
    pub flow: Option<String>,
    /// A flow input, `name=value` (repeatable).
    #[arg(short = 'i', long = "input", requires = "flow")]
    pub inputs: Vec<String>,
    /// Start a run of this template.
    #[arg(long, conflicts_with_all = ["project", "playbook", "inventory"])]
    pub template: Option<String>,
    /// The project of the playbook to run.
    #[arg(long, requires_all = ["playbook", "inventory"])]
    pub project: Option<String>,
    /// The playbook to run (with --project and --inventory).
    #[arg(long, requires = "project")]
    pub playbook: Option<String>,
    /// The stored inventory to run the playbook against.
    #[arg(long, requires = "project")]
    pub inventory: Option<String>,
    /// Extra variables for a template or playbook run: `key=value`, `@file` or JSON
    /// (repeatable).
    #[arg(short = 'e', long = "extra-vars", conflicts_with = "flow")]
    pub extra_vars: Vec<String>,
    /// Print the JSON the API answers.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `troupe schedules` command.
pub async fn run(client: &Client, cmd: SchedulesCmd) -> anyhow::Result<i32> {
    match cmd {
        SchedulesCmd::List { json } => {
            let list: ScheduleList = client.get("/api/v1/schedules").await?;
            if json {
                print_json(&list)?;
                return Ok(0);
            }
            println!(
                "{:<5} {:<20} {:<18} {:<26} {:<25} LAST",
                "ID", "NAME", "CRON", "TARGET", "NEXT"
            );
            for v in &list.schedules {
                let s = &v.schedule;
                println!(
                    "{:<5} {:<20} {:<18} {:<26} {:<25} {}",
                    s.id,
                    s.name,
                    s.cron,
                    target_brief(&s.target),
                    s.next_fire_at.to_rfc3339(),
                    s.last_result.as_deref().unwrap_or("-")
                );
            }
            Ok(0)
        }
        SchedulesCmd::Show { schedule, json } => {
            let id = find(client, &schedule).await?;
            let view: ScheduleView = client.get(&format!("/api/v1/schedules/{id}")).await?;
            if json {
                print_json(&view)?;
            } else {
                print_view(&view);
            }
            Ok(0)
        }
        SchedulesCmd::Create(args) => {
            let CreateArgs {
                name,
                cron,
                timezone,
                missed,
                flow,
                inputs,
                template,
                project,
                playbook,
                inventory,
                extra_vars,
                json,
            } = *args;
            let options = if extra_vars.is_empty() {
                Map::new()
            } else {
                Map::from_iter([(
                    "extra_vars".to_owned(),
                    Value::Object(parse_extra_vars(&extra_vars)?),
                )])
            };
            let target = match (flow, template, project, playbook, inventory) {
                (Some(flow), None, None, None, None) => ScheduleTarget::Flow {
                    flow,
                    inputs: parse_inputs(&inputs)?,
                },
                (None, Some(template), None, None, None) => {
                    ScheduleTarget::Template { template, options }
                }
                (None, None, Some(project), Some(playbook), Some(inventory)) => {
                    ScheduleTarget::Playbook {
                        project,
                        playbook,
                        inventory,
                        options,
                    }
                }
                _ => anyhow::bail!(
                    "say what the schedule starts: --flow NAME, --template NAME, or --project P --playbook X --inventory I"
                ),
            };
            let missed = missed
                .parse::<MissedFires>()
                .map_err(|e| anyhow::anyhow!("--missed: {e}"))?;
            let body = CreateSchedule {
                name,
                cron,
                timezone,
                target,
                missed: Some(missed),
            };
            let view: ScheduleView = client.post("/api/v1/schedules", &body).await?;
            if json {
                print_json(&view)?;
            } else {
                print_view(&view);
            }
            Ok(0)
        }
        SchedulesCmd::Delete { schedule } => {
            let id = find(client, &schedule).await?;
            client.delete(&format!("/api/v1/schedules/{id}")).await?;
            println!("schedule {schedule} deleted");
            Ok(0)
        }
    }
}

/// The id of a schedule named by id or name.
async fn find(client: &Client, schedule: &str) -> anyhow::Result<i64> {
    if let Ok(id) = schedule.parse::<i64>() {
        return Ok(id);
    }
    let list: ScheduleList = client.get("/api/v1/schedules").await?;
    list.schedules
        .iter()
        .find(|v| v.schedule.name == schedule)
        .map(|v| v.schedule.id)
        .ok_or_else(|| anyhow::anyhow!("no schedule named {schedule:?}"))
}

fn target_brief(target: &ScheduleTarget) -> String {
    match target {
        ScheduleTarget::Flow { flow, .. } => format!("flow {flow}"),
        ScheduleTarget::Template { template, .. } => format!("template {template}"),
        ScheduleTarget::Playbook {
            project, playbook, ..
        } => format!("{project}/{playbook}"),
    }
}

fn print_view(view: &ScheduleView) {
    let s = &view.schedule;
    println!(
        "schedule {} {}: {} ({}), missed fires: {}",
        s.id, s.name, s.cron, s.timezone, s.missed
    );
    println!("starts {}", target_brief(&s.target));
    if let (Some(at), Some(result)) = (s.last_fire_at, &s.last_result) {
        println!("last fire {}: {result}", at.to_rfc3339());
    }
    println!("next fires:");
    for t in &view.next_fires {
        println!("  {}", t.to_rfc3339());
    }
}
