//! Running commands: argument binding, the engine, approvals, records, redaction, rendering,
//! the `run`/`resume`/`runs`/`log`/`stats` subcommands and pruning old runs.

pub mod approve;
pub mod args;
pub mod commands;
pub mod engine;
pub mod env_file;
pub mod fanout;
pub mod fleet;
pub mod follow;
pub mod group;
pub mod heartbeat;
pub mod host_secrets;
pub mod hosts_file;
pub mod jobs;
pub mod nested;
pub mod prune;
pub mod records;
pub mod redact;
pub mod remote;
pub mod render;
pub mod selection;
pub mod shield;
pub mod step;
pub mod troubleshoot;
