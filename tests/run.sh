#!/usr/bin/env bash
# The project's one test command (README, .ci/run): installs what the tests need on a fresh
# Debian machine when it is missing, then runs rustfmt, clippy and the whole test suite.
#
#   ./tests/run.sh            everything
#   ./tests/run.sh -p edge-log   extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf '\n==> %s\n' "$*"; }

# --- Debian packages: real peers (MQTT and NATS servers and clients) and build tools --------
. tests/apt.sh
need mosquitto mosquitto
need mosquitto_pub mosquitto-clients
need nats-server nats-server
need cc gcc
need pkg-config pkg-config
# systemd/check.sh verifies the unit with systemd-analyze. Installed here, before any test runs:
# when check.sh installs it itself, apt changes /usr and /var while the .deb test may be running
# dpkg on overlays of them (cross/deb-check.sh) in the same test binary.
need systemd-analyze systemd
# promtool checks and unit-tests the alert rules in examples/monitoring (with systemd as PID 1
# the package also starts a Prometheus server on :9090; the tests do not use it).
need promtool prometheus
# MQTT over WebSockets in a real browser: Debian's Chromium driven by playwright-core (npm), and
# MQTT.js from npm (tests/browser/package.json, pinned by its lock file).
need chromium chromium
need node nodejs
need npm npm
need_venv
install_needed
# Debian's mosquitto package starts a system broker on :1883; tests use ephemeral ports and never
# need it.

# --- Rust toolchain ----------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust >= 1.89 (rustup, or Debian's rustc-web and cargo-web)" >&2
    exit 1
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        say "installing $component"
        rustup component add "$component"
    fi
done

# --- Python peers in ./.venv -------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
fi
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt; then
    echo "pip could not install tests/requirements.txt into .venv" >&2
    exit 1
fi
export EDGE_TESTS_PYTHON="$root/.venv/bin/python"

# --- Browser test peers in tests/browser/node_modules -------------------------------------------
if [ ! -f tests/browser/node_modules/.package-lock.json ] \
    || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
    say "npm ci in tests/browser"
    (cd tests/browser && npm ci --no-audit --no-fund --silent) || {
        echo "npm could not install tests/browser/package-lock.json (MQTT.js, playwright-core)" >&2
        exit 1
    }
fi

# --- Checks and tests --------------------------------------------------------------------------
say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "cargo build"
# The end-to-end tests run target/debug/edge-broker; `cargo test` alone does not rebuild it.
cargo build --workspace --locked
say "cargo test"
# On a failure the failing tests' names and panic messages come again at the end, on stderr: a
# CI view that keeps only part of a long output still shows which test failed and why.
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$test_log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    {
        printf '\n==> cargo test failed (exit %s); the failures again:\n' "$status"
        grep -E -A12 '^---- .* ----$|panicked at|^error: test failed|process didn.t exit' "$test_log" \
            | tail -n 150
    } >&2
    exit "$status"
fi
