//! What a user installs or copies: the sample configs pass `edge-broker check` and document every
//! key the schema has, the systemd unit passes `systemd/check.sh`, and a `.deb` of this build
//! passes `cross/deb-check.sh` (real `dpkg` installs into scratch roots).
//!
//! The `.deb` is packaged from the test build of the binary, stripped, without compression
//! (`EDGE_DEB_COMPRESS=none`), so the whole file runs in well under a minute.

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use edge_tests::broker::broker_binary;
use edge_tests::peers::{program, repo_root};

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn check_config(relative: &str) {
    let path = repo_root().join(relative);
    let output = Command::new(broker_binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "edge-broker check --config {relative} failed: {}",
        text(&output)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(": ok ("),
        "check accepted {relative} without its summary line: {}",
        text(&output)
    );
}

#[test]
fn example_config_passes_check() {
    check_config("examples/edge-broker.toml");
}

#[test]
fn packaged_config_passes_check() {
    check_config("systemd/edge-broker.toml");
}

/// The TOML keys of the config schema, by section, read from `edge-broker/src/config/schema.rs`:
/// the fields of `struct Config` name the sections, the fields of each section's struct the keys.
fn schema_keys() -> BTreeMap<String, BTreeSet<String>> {
    let source =
        std::fs::read_to_string(repo_root().join("edge-broker/src/config/schema.rs")).unwrap();
    let config = struct_fields(&source, "Config");
    assert!(
        config.len() >= 4,
        "could not read the fields of `struct Config` from config/schema.rs: {config:?}"
    );
    config
        .into_iter()
        .map(|(section, ty)| {
            let inner = ty
                .trim_start_matches("Vec<")
                .trim_end_matches('>')
                .to_owned();
            let keys = struct_fields(&source, &inner);
            assert!(
                !keys.is_empty(),
                "no fields found for `struct {inner}` ([{section}])"
            );
            (section, keys.into_iter().map(|(key, _)| key).collect())
        })
        .collect()
}

/// `(toml name, type)` of the `pub` fields of `pub struct NAME { ... }`, honouring
/// `#[serde(rename = "...")]` and skipping `#[serde(skip)]` fields.
fn struct_fields(source: &str, name: &str) -> Vec<(String, String)> {
    let start = format!("pub struct {name} {{");
    let Some(at) = source.find(&start) else {
        return Vec::new();
    };
    let mut fields = Vec::new();
    let mut rename = None;
    let mut skip = false;
    for line in source[at + start.len()..].lines() {
        let line = line.trim();
        if line.starts_with('}') {
            break;
        }
        if let Some(attr) = line.strip_prefix("#[serde(") {
            if let Some(value) = attr.split("rename = \"").nth(1) {
                rename = value.split('"').next().map(str::to_owned);
            }
            skip |= attr.starts_with("skip");
            continue;
        }
        if let Some(field) = line.strip_prefix("pub ")
            && let Some((field, ty)) = field.split_once(':')
        {
            let key = rename.take().unwrap_or_else(|| field.trim().to_owned());
            if !std::mem::take(&mut skip) {
                fields.push((key, ty.trim().trim_end_matches(',').to_owned()));
            }
        }
    }
    fields
}

/// Keys written in a config file, by section; commented-out ones (`# key = ...`) count, so a
/// section that does not exist in this build can still be documented.
fn documented_keys(path: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let line = line.trim().trim_start_matches('#').trim();
        if line.starts_with('[') {
            section = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
            if let Some(end) = section.find(']') {
                section.truncate(end);
            }
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                keys.entry(section.clone())
                    .or_default()
                    .insert(key.to_owned());
            }
        }
    }
    keys
}

#[test]
fn example_config_documents_every_key_of_the_schema() {
    let example = repo_root().join("examples/edge-broker.toml");
    let documented = documented_keys(&example);
    let mut missing = Vec::new();
    for (section, keys) in schema_keys() {
        for key in keys {
            if !documented.get(&section).is_some_and(|d| d.contains(&key)) {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "examples/edge-broker.toml does not document these config keys (add them, commented \
         with what they do and their default): {missing:?}"
    );
}

/// `dpkg --print-architecture` and the matching Rust target triple.
fn host_deb_arch() -> (String, &'static str) {
    let output = Command::new(program("dpkg", "dpkg"))
        .arg("--print-architecture")
        .output()
        .unwrap();
    let arch = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let triple = match arch.as_str() {
        "amd64" => "x86_64-unknown-linux-gnu",
        "arm64" => "aarch64-unknown-linux-gnu",
        "armhf" => "armv7-unknown-linux-gnueabihf",
        other => panic!("no .deb packaging for this machine's architecture {other:?}"),
    };
    (arch, triple)
}

fn require_root(what: &str) {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "{what} needs root (dpkg --root, chown in scratch roots): run the tests as root, e.g. \
         sudo ./tests/run.sh"
    );
}

/// Held by the tests that read or change the host's packages: `systemd/check.sh` may
/// `apt-get install systemd`, and `cross/deb-check.sh` runs `dpkg` on overlays of the host's
/// `/usr`, `/etc` and `/var`, which must not change underneath it.
static HOST_PACKAGES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn host_packages() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed while holding it poisoned it; the packages are no less usable.
    HOST_PACKAGES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn systemd_unit_passes_check_sh() {
    let _host = host_packages();
    // check.sh installs the `systemd` package itself when systemd-analyze is missing.
    if !Path::new("/usr/bin/systemd-analyze").exists() {
        require_root("systemd/check.sh (to apt-get install systemd)");
    }
    let output = Command::new(repo_root().join("systemd/check.sh"))
        .output()
        .unwrap();
    let report = text(&output);
    assert!(output.status.success(), "systemd/check.sh failed: {report}");
    assert!(report.contains("PASS exposure"), "{report}");
    assert!(!report.contains("FAIL"), "{report}");
}

#[test]
fn deb_of_this_build_installs_upgrades_removes_and_purges() {
    require_root("cross/deb-check.sh");
    let _host = host_packages();
    program("dpkg-deb", "dpkg");
    program("unshare", "util-linux");
    let (arch, triple) = host_deb_arch();
    // deb.sh packages $CARGO_TARGET_DIR/<triple>/release/edge-broker: put this build there,
    // stripped as the release profile strips it. deb-check.sh copies it six times over (package,
    // extraction, three installs); with its debug info that was ~0.9 GB of scratch space.
    let scratch = tempfile::tempdir().unwrap();
    let release = scratch.path().join(triple).join("release");
    std::fs::create_dir_all(&release).unwrap();
    let strip = Command::new(program("objcopy", "binutils"))
        .arg("--strip-all")
        .arg(broker_binary())
        .arg(release.join("edge-broker"))
        .output()
        .unwrap();
    assert!(
        strip.status.success(),
        "objcopy --strip-all: {}",
        text(&strip)
    );
    let out_dir = scratch.path().join("deb");
    let output = Command::new(repo_root().join("cross/deb.sh"))
        .arg(&arch)
        .env("CARGO_TARGET_DIR", scratch.path())
        .env("EDGE_BROKER_PROFILE", "release")
        .env("EDGE_DEB_SKIP_BUILD", "1")
        .env("EDGE_DEB_COMPRESS", "none")
        .env("EDGE_DEB_OUT", &out_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cross/deb.sh failed: {}",
        text(&output)
    );
    let deb = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .unwrap_or_else(|| panic!("cross/deb.sh wrote no .deb: {}", text(&output)));
    let output = Command::new(repo_root().join("cross/deb-check.sh"))
        .arg(&arch)
        .arg(&deb)
        .output()
        .unwrap();
    let report = text(&output);
    assert!(
        output.status.success(),
        "cross/deb-check.sh failed: {report}"
    );
    assert!(report.contains("deb-check: all checks passed"), "{report}");
    assert!(
        report.contains("purge kept /var/lib/edge-broker"),
        "{report}"
    );
}

#[test]
fn glibc_check_reads_the_oldest_glibc_a_binary_runs_on() {
    let script = repo_root().join("cross/glibc-check.sh");
    let output = Command::new(&script).arg(broker_binary()).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let need = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        need.starts_with("2.") && need[2..].parse::<u32>().is_ok(),
        "not a glibc version: {need:?}"
    );
    // The same answer as objdump's symbol table, the check the README gives.
    let objdump = Command::new(program("objdump", "binutils"))
        .arg("-T")
        .arg(broker_binary())
        .output()
        .unwrap();
    let symbols = String::from_utf8_lossy(&objdump.stdout);
    assert!(
        symbols.contains(&format!("GLIBC_{need}")),
        "objdump -T has no GLIBC_{need}"
    );
    // At or above what it needs: fine; below: refused, saying why.
    let ok = Command::new(&script)
        .arg(broker_binary())
        .arg(&need)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok));
    let old = Command::new(&script)
        .arg(broker_binary())
        .arg("2.17")
        .output()
        .unwrap();
    assert_eq!(old.status.code(), Some(1), "{}", text(&old));
    assert!(
        text(&old).contains(&format!("needs glibc {need}, newer than 2.17")),
        "{}",
        text(&old)
    );
}

#[test]
fn cross_setup_on_an_arm64_host_says_how_to_build_instead_of_refusing() {
    let setup = repo_root().join("cross/setup.sh");
    let output = Command::new(&setup)
        .arg("aarch64")
        .env("EDGE_CROSS_HOST_ARCH", "arm64")
        .output()
        .unwrap();
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    for want in [
        "this is an arm64 machine",
        "cargo build --release -p edge-broker",
        "takes very long",
        "apt install ./edge-broker_*_arm64.deb",
    ] {
        assert!(report.contains(want), "{want:?} missing: {report}");
    }
    let output = Command::new(&setup)
        .arg("armv7")
        .env("EDGE_CROSS_HOST_ARCH", "arm64")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("build it on an amd64 machine"));
}

/// Shell scripts under `.sh` that CI never runs (benchmarks, cross builds, profiles) parse: a
/// quoting slip (an apostrophe inside a single-quoted `printf` format) once broke
/// `cross/footprint.sh` unnoticed until the next benchmark.
#[test]
fn every_shell_script_parses() {
    fn scripts(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if path.is_dir() {
                if !matches!(&*name, "target" | "node_modules" | ".venv" | ".git") {
                    scripts(&path, found);
                }
            } else if name.ends_with(".sh") {
                found.push(path);
            }
        }
    }
    let root = repo_root();
    let mut found = Vec::new();
    scripts(&root, &mut found);
    for must in ["cross/footprint.sh", "bench/run.sh"] {
        assert!(
            found.iter().any(|p| p.ends_with(must)),
            "the walk missed {must}: {found:?}"
        );
    }
    for script in found {
        let syntax = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            syntax.status.success(),
            "bash -n {}: {}",
            script.display(),
            text(&syntax)
        );
    }
}

/// `bench/run.sh` is not run in CI (benchmarks are not tests), but its `--help` and the table
/// it prints from a results file are (its syntax: `every_shell_script_parses`): a broken script
/// is found here, not by the next person who needs the numbers.
#[test]
fn bench_script_parses_and_its_table_computes_ratios() {
    let root = repo_root();
    let script = root.join("bench/run.sh");
    let help = Command::new(&script).arg("--help").output().unwrap();
    assert!(help.status.success(), "{}", text(&help));
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("--quick"),
        "{}",
        text(&help)
    );

    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.jsonl");
    let line = |bench: &str, tag: &str, row: &str, metric: &str, value: f64| {
        format!(
            r#"{{"bench":"{bench}","tag":"{tag}","row":"{row}","metric":"{metric}","value":{value}}}"#
        )
    };
    let lines = [
        line("fdatasync", "", "disk", "p50_ms", 0.2),
        line("fdatasync", "", "disk", "p99_ms", 1.0),
        line("mqtt", "r1", "edge-broker/routed", "qos1_1", 180_000.0),
        line("mqtt", "r1", "mosquitto/nopersist", "qos1_1", 60_000.0),
        line("mqtt", "r2", "edge-broker/routed", "qos1_1", 100_000.0),
        line("mqtt", "r2", "mosquitto/nopersist", "qos1_1", 50_000.0),
        // Memory rounds (cross/footprint.sh's FOOTPRINT_ROUND): idle 4,800 KiB (4.92 MB) in one,
        // 5,000 KiB (5.12 MB) in the other.
        line("footprint", "10000/r1", "edge", "idle_rss_kib", 4800.0),
        line("footprint", "10000/r1", "edge", "busy_rss_kib", 24_000.0),
        line("footprint", "10000/r1", "mosq", "idle_rss_kib", 8600.0),
        line("footprint", "10000/r1", "mosq", "busy_rss_kib", 15_900.0),
        line("footprint", "10000/r2", "edge", "idle_rss_kib", 5000.0),
        line("footprint", "10000/r2", "edge", "busy_rss_kib", 25_000.0),
        line("footprint", "10000/r2", "mosq", "idle_rss_kib", 8600.0),
        line("footprint", "10000/r2", "mosq", "busy_rss_kib", 15_900.0),
    ];
    std::fs::write(&results, lines.join("\n")).unwrap();
    let python = std::env::var("EDGE_TESTS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let table = Command::new(python)
        .arg(root.join("bench/table.py"))
        .arg(&results)
        .output()
        .unwrap();
    assert!(table.status.success(), "{}", text(&table));
    let out = String::from_utf8_lossy(&table.stdout);
    // Per-round ratios 3.0 and 2.0: the median is 2.5, and "every round >= 3x" is not met.
    let row = out
        .lines()
        .find(|l| l.contains("QoS 1 1→1"))
        .unwrap_or_else(|| panic!("no QoS 1 row:\n{out}"));
    assert!(row.contains("2.50× (2.00–3.00)"), "{row}");
    assert!(row.contains("not met"), "{row}");
    assert!(out.contains("p50 0.20 ms, p99 1.00 ms"), "{out}");
    // Idle in MB, the goal's unit; one round above 5 MB and the goal is not met.
    let idle = out
        .lines()
        .find(|l| l.contains("RSS idle"))
        .unwrap_or_else(|| panic!("no idle row:\n{out}"));
    assert!(idle.contains("(2 rounds) | 5.02 (4.92–5.12)"), "{idle}");
    assert!(idle.contains("not met"), "{idle}");
    let clients = out
        .lines()
        .find(|l| l.contains("10,000 idle MQTT clients"))
        .unwrap_or_else(|| panic!("no idle clients row:\n{out}"));
    assert!(clients.contains("1.54× (1.51–1.57)"), "{clients}");
}

#[test]
fn startup_order_patterns_outlive_lto_renames_of_local_functions() {
    // LTO appends `.N` to a local function it renames (`box_new_uninit.2981`) and N shifts with
    // unrelated code: a cross/startup.ld naming `.2981` gathered nothing one commit later.
    let python = std::env::var("EDGE_TESTS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let cross = repo_root().join("cross");
    let doctest = Command::new(&python)
        .args(["-m", "doctest"])
        .arg(cross.join("startup_order.py"))
        .output()
        .unwrap();
    assert!(doctest.status.success(), "{}", text(&doctest));
    let check = Command::new(&python)
        .arg("-c")
        .arg(
            "import startup_order as s\n\
             a = s.pattern('_RNvNtCs1a2B_5alloc5boxed14box_new_uninit.2981')\n\
             b = s.pattern('_RNvNtCs9z8Y_5alloc5boxed14box_new_uninit.2983')\n\
             assert a == b == s.pattern('_RNvNtCs1a2B_5alloc5boxed14box_new_uninit'), (a, b)\n\
             line = s.sections(a)\n\
             assert '.text.' + a + '.[0-9]* ' in line, line\n\
             assert '.text.unlikely.' + a + '.[0-9]*' in line, line\n\
             print(line)",
        )
        .current_dir(&cross)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
}

#[test]
fn startup_order_v0_patterns_match_the_same_instance_on_every_target() {
    // A v0 back-reference is a byte offset into the name: a crate disambiguator one character
    // shorter on another target (about 1 in 12 are) moves it. Replacing the disambiguators alone
    // left 29 of 1,116 functions that ran unmatched in a rebuild with other flags, each then
    // mapping a 64 KiB window of its own (BENCHMARKS.md "v0 symbol names").
    let python = std::env::var("EDGE_TESTS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let check = Command::new(&python)
        .arg("-c")
        .arg(
            "import fnmatch, startup_order as s\n\
             x86 = '_RINvNtCs1a2b3c4d5e6_4core3mem4dropTNtCs9z8y7x6w5v4_3foo3BarNtB1c_3BazEECs7q_3app'\n\
             arm = '_RINvNtCs1a2b3c4d5e_4core3mem4dropTNtCs9z8y7x6w5v4_3foo3BarNtB1b_3BazEECs8r_3app'\n\
             assert s.CRATE.sub('Cs*_', x86) != s.CRATE.sub('Cs*_', arm)\n\
             p = s.pattern(x86)\n\
             assert p == s.pattern(arm), (p, s.pattern(arm))\n\
             assert fnmatch.fnmatchcase(x86, p) and fnmatch.fnmatchcase(arm, p), p\n\
             other = x86.replace('3Bar', '3Baz', 1)\n\
             assert not fnmatch.fnmatchcase(other, p), p\n\
             print(p)",
        )
        .current_dir(repo_root().join("cross"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
}

#[test]
fn cross_scripts_refuse_a_second_target_instead_of_ignoring_it() {
    // `cross/build.sh aarch64 armv7` built aarch64 only and exited 0; `deb.sh` and `setup.sh`
    // did the same with their second argument. The cache points nowhere, so a script that got
    // past its arguments fails at once (no cargo-zigbuild) instead of building for minutes.
    for (script, args, want) in [
        (
            "build.sh",
            ["aarch64", "armv7"],
            "one target at a time, or all (got: aarch64 armv7)",
        ),
        (
            "setup.sh",
            ["aarch64", "armv7"],
            "one target at a time, or all (got: aarch64 armv7)",
        ),
        (
            "deb.sh",
            ["arm64", "armhf"],
            "one architecture at a time, or all (got: arm64 armhf)",
        ),
    ] {
        let output = Command::new(repo_root().join("cross").join(script))
            .args(args)
            .env("EDGE_CROSS_SKIP_SETUP", "1")
            .env("EDGE_DEB_SKIP_BUILD", "1")
            .env("EDGE_CROSS_CACHE", "/nonexistent/edge-broker-cross")
            .env("EDGE_CROSS_HOST_ARCH", "amd64")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{script}: {}", text(&output));
        assert!(text(&output).contains(want), "{script}: {}", text(&output));
    }
}
