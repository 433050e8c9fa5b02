//! RedRunner's job actions: an action on a unit is an ordinary run of `<action>-<unit>.yml`
//! from the unit's playbooks, with the job, tag, unit and action as extra vars.

use crate::{
    InventorySource, LaunchError, LaunchRequest, LaunchResult, Launcher, ProjectRef, playbooks,
};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::path::{Component, Path, PathBuf};
use troupe_ansible::PlaybookError;
use troupe_core::inventory::{InventoryContent, InventoryFormat};
use troupe_core::job::{Job, Unit, UnitSource, validate_action};
use troupe_core::project::{NewProject, Project, ProjectSource};
use troupe_core::run::{Origin, Run, RunOptions};
use troupe_store::StoreError;

/// The default inventory of a unit action: this machine.
pub const LOCALHOST: &str = "localhost ansible_connection=local\n[all:vars]\nansible_python_interpreter={{ ansible_playbook_python }}\n";

/// An action to run on a unit.
#[derive(Debug, Clone, Default)]
pub struct Action {
    /// Runs `<action>-<unit>.yml`.
    pub action: String,
    /// Extra variables; troupe adds `troupe_job_id`, `troupe_job_tag`, `troupe_unit` and
    /// `troupe_action`.
    pub extra_vars: Map<String, Value>,
    /// Inventory text (YAML or INI); default: [`LOCALHOST`].
    pub hosts: Option<String>,
}

impl Launcher {
    /// Starts `action` on `unit` of `job`.
    pub async fn unit_action(&self, job: &Job, unit: &Unit, action: &Action) -> LaunchResult<Run> {
        validate_action(&action.action)?;
        let project = self.unit_project(job, unit).await?;
        let playbook = format!("{}-{}.yml", action.action, unit.name);
        let mut extra_vars = action.extra_vars.clone();
        extra_vars.insert("troupe_job_id".into(), json!(job.id));
        extra_vars.insert("troupe_job_tag".into(), json!(job.tag));
        extra_vars.insert("troupe_unit".into(), json!(unit.name));
        extra_vars.insert("troupe_action".into(), json!(action.action));
        let hosts = action.hosts.clone().unwrap_or_else(|| LOCALHOST.to_owned());
        let inventory = InventoryContent {
            format: InventoryFormat::detect(&hosts),
            hosts,
            vars: None,
        };
        let dir = playbooks::project_root(&project, self.projects_dir());
        let mut request = LaunchRequest::playbook(
            ProjectRef::Found(Box::new(project)),
            playbook.clone(),
            InventorySource::Inline(inventory),
            RunOptions {
                extra_vars,
                ..Default::default()
            },
        );
        request.tag = Some(job.tag.clone());
        let origin = Origin::JobUnit {
            job_id: job.id,
            unit: unit.name.clone(),
        };
        match self.launch(request, origin).await {
            Err(LaunchError::Playbook {
                source: PlaybookError::Missing(_),
                ..
            }) => Err(LaunchError::UnitPlaybookMissing {
                unit: unit.name.clone(),
                playbook,
                dir: dir.display().to_string(),
            }),
            other => other,
        }
    }

    /// The project holding a unit's playbooks: its own, else the job's. A data_dir is
    /// registered as a project (once, named after its path) so runs can refer to it.
    pub async fn unit_project(&self, job: &Job, unit: &Unit) -> LaunchResult<Project> {
        match &unit.source {
            Some(UnitSource::Project(id)) => Ok(self.store().get_project(*id).await?),
            Some(UnitSource::DataDir(dir)) => {
                let pdir = self.unit_playbook_dir(dir).await?;
                let path = pdir.display().to_string();
                let name = format!(
                    "datadir-{}",
                    hex::encode(&Sha256::digest(path.as_bytes())[..6])
                );
                if let Some(p) = self.store().find_project(&name).await? {
                    return Ok(p);
                }
                let new = NewProject {
                    name: name.clone(),
                    source: ProjectSource::Dir { path },
                };
                match self.store().create_project(&new).await {
                    Ok(p) => Ok(p),
                    // Two actions registering the same data_dir at once: take the winner's.
                    Err(StoreError::Conflict(why)) => self
                        .store()
                        .find_project(&name)
                        .await?
                        .ok_or(LaunchError::Store(StoreError::Conflict(why))),
                    Err(e) => Err(e.into()),
                }
            }
            None => match job.project_id {
                Some(id) => Ok(self.store().get_project(id).await?),
                None => Err(LaunchError::UnitWithoutPlaybooks(unit.name.clone())),
            },
        }
    }
}

/// The playbooks directory of an absolute data_dir: `project/`, else `projects/` (the seed's
/// name).
pub async fn playbook_dir_of(data_dir: &Path) -> LaunchResult<PathBuf> {
    if !data_dir.is_absolute() {
        return Err(LaunchError::InvalidDataDir(format!(
            "data_dir must be an absolute path, got {}",
            data_dir.display()
        )));
    }
    for sub in ["project", "projects"] {
        let dir = data_dir.join(sub);
        if tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
            return Ok(dir);
        }
    }
    Err(LaunchError::InvalidDataDir(format!(
        "{} has no project/ or projects/ directory of playbooks",
        data_dir.display()
    )))
}

impl Launcher {
    /// The playbooks directory of a unit's data_dir (see [`playbook_dir_of`]). A relative
    /// data_dir is relative to `unit_data_dir_base` and must stay inside it: no `..`, and no
    /// symlink that leads out (the playbooks directory is resolved and checked).
    pub async fn unit_playbook_dir(&self, data_dir: &str) -> LaunchResult<PathBuf> {
        let given = Path::new(data_dir);
        if data_dir.is_empty() || data_dir.contains('\0') {
            return Err(LaunchError::InvalidDataDir(
                "data_dir must be a directory path".into(),
            ));
        }
        if given.is_absolute() {
            return playbook_dir_of(given).await;
        }
        let Some(base) = &self.unit_data_dir_base else {
            return Err(LaunchError::InvalidDataDir(format!(
                "data_dir must be an absolute path (or relative to unit_data_dir_base, which \
                 this server does not set), got {data_dir}"
            )));
        };
        let lexically_inside = given
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !lexically_inside {
            return Err(LaunchError::InvalidDataDir(format!(
                "data_dir {data_dir} leaves unit_data_dir_base"
            )));
        }
        let dir = playbook_dir_of(&base.join(given)).await?;
        let (real_base, real_dir) = (
            tokio::fs::canonicalize(base).await,
            tokio::fs::canonicalize(&dir).await,
        );
        match (real_base, real_dir) {
            (Ok(b), Ok(d)) if d.starts_with(&b) => Ok(d),
            (Ok(_), Ok(_)) => Err(LaunchError::InvalidDataDir(format!(
                "data_dir {data_dir} leads out of unit_data_dir_base"
            ))),
            _ => Err(LaunchError::InvalidDataDir(format!(
                "data_dir {data_dir} cannot be resolved under unit_data_dir_base"
            ))),
        }
    }
}
