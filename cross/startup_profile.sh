#!/usr/bin/env bash
# Regenerate cross/startup.ld, the linker script that links the code run at start-up and idle first.
#
# Usage: cross/startup_profile.sh UNSTRIPPED_BINARY [SECONDS] [OUT]
#
# UNSTRIPPED_BINARY: an x86_64 release build with symbols, e.g.
#   CARGO_PROFILE_RELEASE_STRIP=false cross/build.sh x86_64
#   cp target/x86_64-unknown-linux-gnu/release/edge-broker /tmp/edge-broker-unstripped
# (cross/build.sh's v0 symbol names; the ARM builds use the same script: its patterns leave out
# what differs per target).
# Runs the binary under valgrind's callgrind with the config of cross/footprint.sh (MQTT, NATS,
# /metrics, one route, fsync "always", a temp data dir) through what an idle gateway does: a bare
# TCP probe of each listener (what a health check and cross/footprint.sh do), one quiet MQTT and
# one quiet NATS client held open (cross/idle_clients.py), one /metrics scrape, SECONDS (default
# 20) of idle; then SIGTERM. Writes OUT (default cross/startup.ld) with cross/startup_order.py
# and prints cross/text_pages.py's count of the 64 KiB windows the run touched. Takes ~1 min.
# Rerun when start-up code changes a lot (cross/build.sh prints how much the script gathers).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cross/idle_broker.sh
. "$HERE/idle_broker.sh"
die() { printf 'startup_profile: ERROR: %s\n' "$*" >&2; exit 2; }
case "${1:-}" in "" | -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
BIN="$1"; SECS="${2:-20}"; OUT="${3:-$HERE/startup.ld}"
[ -x "$BIN" ] || die "$BIN is not executable"
[ "$(readelf -SW "$BIN" | grep -c "\.symtab")" -gt 0 ] || die "$BIN has no symbols (build it with CARGO_PROFILE_RELEASE_STRIP=false)"
# Legacy names (a plain `cargo build`) would give patterns that match nothing in cross/build.sh's
# v0-named builds.
[ "$(nm --defined-only "$BIN" | grep -c " _RNvNtCs[0-9A-Za-z]*_11edge_broker")" -gt 0 ] \
  || die "$BIN has no v0 symbol names of edge_broker (build it with cross/build.sh x86_64)"
command -v valgrind >/dev/null || die "valgrind is missing: apt-get install valgrind"

WORK="$(mktemp -d)"; PID=""; CLIENTS=()
cleanup() {
  local p
  for p in "${CLIENTS[@]}" $PID; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  local i
  for ((i = 0; i < 600; i++)); do port_open "$1" && return 0; sleep 0.1; done
  die "nothing listens on $1 after 60 s: $(tail -n 5 "$WORK/run.log")"
}
MQTT_PORT="$(free_port)"; NATS_PORT="$(free_port)"; METRICS_PORT="$(free_port)"
idle_broker_toml startup-profile "$WORK/edge-data" "$MQTT_PORT" "$NATS_PORT" "$METRICS_PORT" \
  >"$WORK/edge-broker.toml"
valgrind --tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no \
  --callgrind-out-file="$WORK/cg.out" "$BIN" --config "$WORK/edge-broker.toml" \
  >"$WORK/run.log" 2>&1 &
PID=$!
for p in "$MQTT_PORT" "$NATS_PORT" "$METRICS_PORT"; do wait_port "$p"; done
python3 "$HERE/idle_clients.py" --port "$MQTT_PORT" --count 1 --prefix profile >"$WORK/mqtt.out" 2>&1 &
CLIENTS+=("$!")
python3 "$HERE/idle_clients.py" --port "$NATS_PORT" --count 1 --prefix profile --nats >"$WORK/nats.out" 2>&1 &
CLIENTS+=("$!")
for c in mqtt nats; do
  for ((i = 0; i < 600; i++)); do grep -q '^ready' "$WORK/$c.out" && break; sleep 0.1; done
  grep -q '^ready' "$WORK/$c.out" || die "the idle $c client did not connect: $(cat "$WORK/$c.out")"
done
curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" >/dev/null || die "GET /metrics failed"
sleep "$SECS"
for p in "${CLIENTS[@]}"; do kill -TERM "$p"; wait "$p" 2>/dev/null || true; done
CLIENTS=()
kill -TERM "$PID"
wait "$PID" || die "the broker did not exit cleanly on SIGTERM: $(tail -n 5 "$WORK/run.log")"
PID=""
python3 "$HERE/text_pages.py" "$WORK/cg.out" "$BIN"
python3 "$HERE/startup_order.py" "$WORK/cg.out" "$BIN" "$OUT"
