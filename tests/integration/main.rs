//! The integration tests: one binary (link time and CI time stay low), one module per area.
//! Every test runs the real `nixcmd` binary through [`support::Test`].

#[macro_use]
mod support;

mod bad_input;
mod builtins;
mod check;
mod claude_export;
mod corpus;
mod fixtures;
mod fuzz_regressions;
mod hosts;
mod list;
mod new;
mod run_conditions;
mod run_follow;
mod run_gates;
mod run_heartbeat;
mod run_misbehaving;
mod run_partial_lines;
mod run_prestart;
mod run_prune;
mod run_records;
mod run_signals;
mod run_support;
mod show;
mod stdout_errors;
