//! `troupe jobs ...`: RedRunner's tagged jobs of named units.

use crate::cli::{encode, print_json};
use crate::client::Client;
use clap::Subcommand;
use serde_json::Value;
use troupe_wire::IdOrName;
use troupe_wire::jobs::{
    ActionRequest, CreateJob, Job, JobActionResult, JobView, Run, SetUnit, Unit, UnitSource,
};

/// Create jobs, find the latest by tag, trigger actions on units.
#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// Create a job with a tag and units.
    Create {
        /// The tag (many jobs may share one).
        #[arg(long)]
        tag: String,
        /// Default project of the units (id or name).
        #[arg(long)]
        project: Option<String>,
        /// Unit names.
        #[arg(required = true)]
        units: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The latest job with a tag.
    Latest {
        /// The tag.
        tag: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set where a unit's playbooks are (`PUT /api/v1/jobs/{id}/units/{unit}`): a data_dir
    /// holding a `project/` (or `projects/`) directory, or `--project`.
    #[command(name = "set-unit", visible_alias = "put-unit")]
    SetUnit {
        /// Job id.
        job: i64,
        /// The unit.
        unit: String,
        /// The unit's data_dir: absolute, or relative to the server's `unit_data_dir_base`.
        /// (Not `--data-dir`: that is this troupe's own.)
        #[arg(
            value_name = "DATA_DIR",
            conflicts_with = "project",
            required_unless_present = "project"
        )]
        unit_data_dir: Option<String>,
        /// A project (id or name).
        #[arg(long)]
        project: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run `<action>-<unit>.yml` for one unit, or for every unit of the job in parallel.
    Action {
        /// Job id.
        job: i64,
        /// The action: its name, or the playbook's file name (`<action>-<unit>.yml` with
        /// `--unit`, or `<action>-each.yml`).
        action: String,
        /// Only this unit.
        #[arg(long)]
        unit: Option<String>,
        /// Extra variables: `key=value`, `@file`, or JSON. Repeatable.
        #[arg(short = 'e', long = "extra-vars")]
        extra_vars: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A job, its units, their latest runs and the job's status.
    Show {
        /// Job id.
        job: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &Client, cmd: JobsCmd) -> anyhow::Result<i32> {
    match cmd {
        JobsCmd::Create {
            tag,
            project,
            units,
            json: as_json,
        } => {
            let body = CreateJob {
                tag,
                units,
                project: project.map(|p| p.parse::<IdOrName>()).transpose()?,
            };
            let job: Job = client.post("/api/v1/jobs", &body).await?;
            print_job_brief(&job, as_json)?;
            Ok(0)
        }
        JobsCmd::Latest { tag, json: as_json } => {
            let job: Job = client
                .get(&format!("/api/v1/jobs?tag={tag}&latest=true"))
                .await?;
            print_job_brief(&job, as_json)?;
            Ok(0)
        }
        JobsCmd::SetUnit {
            job,
            unit,
            unit_data_dir,
            project,
            json: as_json,
        } => {
            let body = SetUnit {
                project: project.map(|p| p.parse::<IdOrName>()).transpose()?,
                data_dir: unit_data_dir,
            };
            let set: Unit = client
                .put(
                    &format!("/api/v1/jobs/{job}/units/{}", encode(&unit)),
                    &body,
                )
                .await?;
            if as_json {
                print_json(&set)?;
            } else {
                let source = match &set.source {
                    Some(UnitSource::Project(id)) => format!("project {id}"),
                    Some(UnitSource::DataDir(dir)) => format!("data_dir {dir}"),
                    None => "the job's project".to_owned(),
                };
                println!("unit {} of job {job}: {source}", set.name);
            }
            Ok(0)
        }
        JobsCmd::Action {
            job,
            action,
            unit,
            extra_vars,
            json: as_json,
        } => {
            let vars = crate::cli::run::parse_extra_vars(&extra_vars)?;
            let body = ActionRequest {
                action,
                extra_vars: Some(Value::Object(vars)),
                hosts: None,
            };
            let result: JobActionResult = match &unit {
                Some(u) => {
                    let run: Run = client
                        .post(
                            &format!("/api/v1/jobs/{job}/units/{}/actions", encode(u)),
                            &body,
                        )
                        .await?;
                    JobActionResult {
                        runs: vec![run],
                        errors: Vec::new(),
                    }
                }
                None => {
                    client
                        .post(&format!("/api/v1/jobs/{job}/actions"), &body)
                        .await?
                }
            };
            if as_json {
                print_json(&result)?;
            } else {
                for r in &result.runs {
                    println!(
                        "run {} queued: {} ({})",
                        r.id,
                        r.playbook,
                        r.unit.as_deref().unwrap_or("?")
                    );
                }
                for e in &result.errors {
                    eprintln!("troupe: unit {}: {}", e.unit, e.message);
                }
            }
            Ok(if result.errors.is_empty() { 0 } else { 2 })
        }
        JobsCmd::Show { job, json: as_json } => {
            let view: JobView = client.get(&format!("/api/v1/jobs/{job}")).await?;
            if as_json {
                print_json(&view)?;
                return Ok(0);
            }
            println!("job {} tag {} status {}", view.id, view.tag, view.status);
            println!("{:<24} {:<11} {:<7} PLAYBOOK", "UNIT", "STATUS", "RUN");
            for u in &view.units {
                let latest = u.runs.first();
                println!(
                    "{:<24} {:<11} {:<7} {}",
                    u.name,
                    u.status,
                    latest.map_or_else(|| "-".into(), |r| r.id.to_string()),
                    latest.map_or("-", |r| r.playbook.as_str())
                );
            }
            Ok(0)
        }
    }
}

fn print_job_brief(job: &Job, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        print_json(job)?;
    } else {
        let units: Vec<&str> = job.units.iter().map(|u| u.name.as_str()).collect();
        println!("job {} tag {} units {}", job.id, job.tag, units.join(","));
    }
    Ok(())
}
