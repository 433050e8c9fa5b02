//! troupe end to end: the real binary, over HTTP and on the command line, with a real
//! ansible-playbook, real databases and brokers. One test binary, one module per feature;
//! the harness is `troupe-testkit` (shared with the benchmark), plus [`helpers`].

mod helpers;

mod api;
mod audit;
mod cli;
mod credentials;
mod events;
mod events_brokers;
mod events_flows;
mod fidelity;
mod flow_steps;
mod flows;
mod flows_validate;
mod git_projects;
mod gitcreds;
mod harness;
mod https;
mod inventories;
mod jobs;
mod limits;
mod loopabull;
mod metrics;
mod notify;
mod pansible;
mod postgres;
mod redaction;
mod replicas;
mod retention;
mod roles;
mod runner_compat;
mod runs;
mod schedules;
mod slices;
mod streams;
mod tls;
mod traces;
mod ui;
mod warm;
mod workers;
