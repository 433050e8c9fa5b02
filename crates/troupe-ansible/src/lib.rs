//! Everything troupe needs from Ansible: finding (or bootstrapping) `ansible-playbook`, the
//! callback plugin that streams events, and supervising one `ansible-playbook` process.
//!
//! - [`Ansible::locate`] / [`Ansible::bootstrap`] find the executable or build a venv with
//!   [`PINNED_ANSIBLE_CORE`].
//! - [`Process::spawn`] prepares a private run directory, starts `ansible-playbook` in its own
//!   process group with the troupe plugin enabled, and streams [`Output`]s: events parsed from the
//!   plugin's pipe, and the raw stdout/stderr lines.
//! - [`Process::cancel`] stops it gracefully (SIGUSR1 to the plugin) or by force (SIGINT, SIGTERM,
//!   SIGKILL to the group); [`Process::wait`] returns an [`Exit`] once nothing of the run is left.
//! - [`Launcher::Warm`] forks runs from warm parents that imported ansible once, one per
//!   configuration ansible reads at import ([`WarmPool`]); exec otherwise.
//! - [`reap_orphans`] cleans up after a troupe that crashed.
//! - [`spawn_child`] is how any child process of troupe is started (see its docs: spawner
//!   threads that never end, so that `PR_SET_PDEATHSIG` fires only when troupe dies).
//! - [`RunChild`] is a run's process as the supervisor sees it: troupe's own child, or a
//!   process another launcher started ([`RunChild::foreign`]).

mod access;
mod child;
mod error;
mod hosts;
mod locate;
mod playbook;
pub mod plugin;
mod posix_spawn;
mod process;
mod procfs;
mod reap;
mod rundir;
mod spawner;
mod warm;

pub use child::{ExitSource, ReportedStatus, RunChild};
pub use error::AnsibleError;
pub use hosts::{hosts_of, list_hosts};
pub use locate::{Ansible, PINNED_ANSIBLE_CORE, on_path};
pub use playbook::{PlaybookError, resolve_playbook_blocking};
pub use plugin::{
    BOOT_FILE, BOOT_SOURCE, EventLineError, PLUGIN_NAME, PLUGIN_SOURCE, parse_event_line,
};
pub use process::{
    DEFAULT_MAX_EVENT_BYTES, Exit, Grace, LaunchSpec, Limits, Output, Process, Stream, child_env,
};
pub use reap::{Orphan, reap_orphans};
pub use spawner::spawn_child;
pub use warm::{
    Fallback, Launcher, PARENTS_FILE, ParentInfo, WARM_FILE, WARM_SOURCE, WarmKey, WarmPool,
    WarmSettings, read_parents,
};
