//! What a launch asks for, before anything it names has been looked up.

use std::fmt;
use troupe_core::inventory::InventoryContent;
use troupe_core::notify::Notify;
use troupe_core::overrides::Overrides;
use troupe_core::project::Project;
use troupe_core::run::{Labels, RunOptions};

/// A stored resource named by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    /// By id.
    Id(i64),
    /// By name.
    Name(String),
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Id(id) => write!(f, "with id {id}"),
            Ref::Name(n) => write!(f, "named {n:?}"),
        }
    }
}

/// The project a launch runs a playbook of.
#[derive(Debug, Clone, PartialEq)]
pub enum ProjectRef {
    /// A stored project to look up.
    Ref(Ref),
    /// A project the caller has already read.
    Found(Box<Project>),
}

/// What is run: a playbook of a project, or a saved template.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A playbook (relative to its project).
    Playbook {
        /// The project.
        project: ProjectRef,
        /// The playbook's path inside the project.
        playbook: String,
    },
    /// A template: its project, playbook, inventory, default options and labels.
    Template(Ref),
}

/// The inventory a run uses.
#[derive(Debug, Clone, PartialEq)]
pub enum InventorySource {
    /// A stored inventory; its content is copied into the run.
    Stored(Ref),
    /// Inline YAML or INI text, checked before the run is stored.
    Inline(InventoryContent),
    /// None of troupe's: the inventory ansible's configuration names (the project's
    /// `ansible.cfg` `inventory`, else ansible's default), as ansible-playbook without `-i`.
    AnsibleConfig,
    /// The copy another run kept (a relaunch, a slice), with the stored inventory it came from.
    Snapshot {
        /// The stored inventory it was copied from, if any.
        id: Option<i64>,
        /// The content as that run used it.
        content: InventoryContent,
    },
}

/// The options of a launch.
#[derive(Debug, Clone, PartialEq)]
pub enum LaunchOptions {
    /// Exactly these options (a template's defaults are not used).
    Exact(Box<RunOptions>),
    /// These overrides over the template's defaults, or over the plain defaults without one
    /// (see [`troupe_core::overrides`]).
    Over(Overrides),
}

/// A request to start a run, as every way of starting one states it.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    /// What to run.
    pub target: Target,
    /// The inventory; `None` takes the template's (a playbook target must name one).
    pub inventory: Option<InventorySource>,
    /// The ansible-playbook options.
    pub options: LaunchOptions,
    /// Labels, added to the template's.
    pub labels: Labels,
    /// A tag grouping related runs.
    pub tag: Option<String>,
    /// Where to tell the run's end, besides the template's targets (checked and sealed by
    /// the launcher).
    pub notify: Vec<Notify>,
}

impl LaunchRequest {
    /// A playbook of `project` against `inventory`, with `options` exactly.
    pub fn playbook(
        project: ProjectRef,
        playbook: impl Into<String>,
        inventory: InventorySource,
        options: RunOptions,
    ) -> LaunchRequest {
        LaunchRequest {
            target: Target::Playbook {
                project,
                playbook: playbook.into(),
            },
            inventory: Some(inventory),
            options: LaunchOptions::Exact(Box::new(options)),
            labels: Labels::new(),
            tag: None,
            notify: Vec::new(),
        }
    }

    /// A template with `overrides` over its defaults, on its own inventory.
    pub fn template(template: Ref, overrides: Overrides) -> LaunchRequest {
        LaunchRequest {
            target: Target::Template(template),
            inventory: None,
            options: LaunchOptions::Over(overrides),
            labels: Labels::new(),
            tag: None,
            notify: Vec::new(),
        }
    }

    /// The same run again: the playbook, inventory copy, options, labels and tag a stored run
    /// had, with `options` in place of its own.
    pub fn again(
        run: &troupe_core::run::Run,
        inventory: InventoryContent,
        options: RunOptions,
    ) -> LaunchRequest {
        LaunchRequest {
            target: Target::Playbook {
                project: ProjectRef::Ref(Ref::Id(run.project_id)),
                playbook: run.playbook.clone(),
            },
            inventory: Some(InventorySource::Snapshot {
                id: run.inventory_id,
                content: inventory,
            }),
            options: LaunchOptions::Exact(Box::new(options)),
            labels: run.labels.clone(),
            tag: run.tag.clone(),
            notify: Vec::new(),
        }
    }
}
