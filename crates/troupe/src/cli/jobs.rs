//! `troupe jobs ...`: RedRunner's tagged jobs of named units.

use crate::client::Client;
use clap::Subcommand;
use serde_json::{Value, json};

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
    /// Run `<action>-<unit>.yml` for one unit, or for every unit of the job in parallel.
    Action {
        /// Job id.
        job: i64,
        /// The action.
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
            let mut body = json!({"tag": tag, "units": units});
            if let Some(p) = project {
                body["project"] = p.parse::<i64>().map_or_else(|_| json!(p), |id| json!(id));
            }
            let job: Value = client.post("/api/v1/jobs", &body).await?;
            print_job_brief(&job, as_json)?;
            Ok(0)
        }
        JobsCmd::Latest { tag, json: as_json } => {
            let job: Value = client
                .get(&format!("/api/v1/jobs?tag={tag}&latest=true"))
                .await?;
            print_job_brief(&job, as_json)?;
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
            let body = json!({"action": action, "extra_vars": vars});
            let result: Value = match &unit {
                Some(u) => {
                    let run: Value = client
                        .post(&format!("/api/v1/jobs/{job}/units/{u}/actions"), &body)
                        .await?;
                    json!({"runs": [run], "errors": []})
                }
                None => {
                    client
                        .post(&format!("/api/v1/jobs/{job}/actions"), &body)
                        .await?
                }
            };
            if as_json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                for r in result["runs"].as_array().into_iter().flatten() {
                    println!(
                        "run {} queued: {} ({})",
                        r["id"],
                        r["playbook"].as_str().unwrap_or("?"),
                        r["unit"].as_str().unwrap_or("?")
                    );
                }
                for e in result["errors"].as_array().into_iter().flatten() {
                    eprintln!(
                        "troupe: unit {}: {}",
                        e["unit"].as_str().unwrap_or("?"),
                        e["message"].as_str().unwrap_or("?")
                    );
                }
            }
            Ok(
                if result["errors"].as_array().is_some_and(|e| !e.is_empty()) {
                    2
                } else {
                    0
                },
            )
        }
        JobsCmd::Show { job, json: as_json } => {
            let view: Value = client.get(&format!("/api/v1/jobs/{job}")).await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&view)?);
                return Ok(0);
            }
            println!(
                "job {} tag {} status {}",
                view["id"],
                view["tag"].as_str().unwrap_or("?"),
                view["status"].as_str().unwrap_or("?")
            );
            println!("{:<24} {:<11} {:<7} PLAYBOOK", "UNIT", "STATUS", "RUN");
            for u in view["units"].as_array().into_iter().flatten() {
                let latest = &u["runs"][0];
                println!(
                    "{:<24} {:<11} {:<7} {}",
                    u["name"].as_str().unwrap_or("?"),
                    u["status"].as_str().unwrap_or("?"),
                    latest["id"]
                        .as_i64()
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "-".into()),
                    latest["playbook"].as_str().unwrap_or("-")
                );
            }
            Ok(0)
        }
    }
}

fn print_job_brief(job: &Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(job)?);
    } else {
        let units: Vec<&str> = job["units"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u["name"].as_str())
            .collect();
        println!(
            "job {} tag {} units {}",
            job["id"],
            job["tag"].as_str().unwrap_or("?"),
            units.join(",")
        );
    }
    Ok(())
}
