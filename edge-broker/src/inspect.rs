//! `edge-broker log` (stub while building).
use std::path::Path;
use std::process::ExitCode;
/// Runs the subcommand.
pub fn main(_config: Option<&Path>, _command: crate::cli::LogCommand) -> ExitCode {
    ExitCode::FAILURE
}
