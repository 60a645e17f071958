//! Locating the real peer programs the end-to-end tests talk to.

use std::path::{Path, PathBuf};

/// The repository root (the workspace), from this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The Python interpreter of `.venv` that has the test peers installed (`EDGE_TESTS_PYTHON` or
/// `<repo>/.venv/bin/python`). Panics with install instructions when it is missing.
pub fn python() -> PathBuf {
    let python = std::env::var_os("EDGE_TESTS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    assert!(
        python.exists(),
        "the test peers' Python ({}) is missing: run ./tests/run.sh, or \
         python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt",
        python.display()
    );
    python
}

/// Finds `program` on PATH, or panics naming the Debian package that provides it.
pub fn program(program: &str, debian_package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{program}` is not installed: run ./tests/run.sh, or apt-get install {debian_package}"
        )
    })
}

/// A child process that is killed and reaped when dropped, so a failing test never leaves a
/// peer running (or holding the test's output pipe open).
#[derive(Debug)]
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
