//! nixcmd: Markdown runbooks as safe, repeatable operations for NixOS fleets.
//!
//! Stages: bytes → [`source::SourceFile`] → [`outline`] → [`command::Command`] (the parser
//! and checker do no I/O) → runs that emit events → renderers that print.

pub mod attrs;
pub mod command;
pub mod diagnostic;
pub mod duration;
pub mod frontmatter;
pub mod guided;
pub mod outline;
pub mod parser;
pub mod sections;
pub mod settings;
pub mod source;
pub mod suggest;
