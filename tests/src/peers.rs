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

/// Whether process `pid` holds the socket listening on TCP `port` of 127.0.0.1 (or any
/// address), from `/proc/net/tcp` and `/proc/PID/fd`.
///
/// A port picked free and handed to a peer can be taken by another test's peer before the
/// peer binds it; the peer then fails, and a readiness probe that only connects would talk to
/// the other test's peer — a Tansu or S3 emulator shared by two tests mixes their data. A
/// peer is ready only when the listening socket is its own.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let Some(inode) = listening_inode(port) else {
        return false;
    };
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
        })
}

/// The inode of the socket in state LISTEN on `port` (IPv4), if any.
fn listening_inode(port: u16) -> Option<u64> {
    const LISTEN: &str = "0A";
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1)?.rsplit_once(':')?.1;
        let listening =
            u16::from_str_radix(local_port, 16).ok()? == port && fields.get(3) == Some(&LISTEN);
        listening.then(|| fields.get(9)?.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_belongs_to_the_process_that_bound_it_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listens_on(std::process::id(), port));
        // Another process (pid 1) does not hold it; a closed port has no listener.
        assert!(!listens_on(1, port));
        drop(listener);
        assert!(!listens_on(std::process::id(), port));
    }
}
