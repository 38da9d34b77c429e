//! nixcmd: Markdown runbooks as safe, repeatable operations for NixOS fleets.
//!
//! Stages: bytes → [`source::SourceFile`] → [`outline`] → [`command::Command`] (the parser
//! and checker do no I/O) → runs that emit events → renderers that print.

pub mod app;
pub mod attrs;
pub mod check;
pub mod check_report;
pub mod claude_export;
pub mod cli;
pub mod command;
pub mod condition;
pub mod diagnostic;
pub mod dir_listing;
pub mod discovery;
pub mod duration;
pub mod event;
pub mod exit;
pub mod frontmatter;
pub mod git_head;
pub mod guided;
pub mod hosts;
pub mod huge_alloc;
pub mod io_error;
pub mod list;
pub mod mcp;
pub mod outline;
pub mod outline_scan;
pub mod output;
pub mod parser;
pub mod process;
pub mod records_io;
pub mod run;
pub mod sections;
pub mod settings;
pub mod show;
pub mod simple_yaml;
pub mod skeleton;
pub mod source;
pub mod suggest;
pub mod summary;
pub mod terminal_text;
pub(crate) mod vfork;
