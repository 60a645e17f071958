//! `edge-broker status` (stub while building).
use std::path::Path;
use std::process::ExitCode;
/// Runs the subcommand.
pub fn main(_config: Option<&Path>, _args: &crate::cli::StatusArgs) -> ExitCode {
    ExitCode::FAILURE
}
