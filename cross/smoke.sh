#!/usr/bin/env bash
# Smoke-test the ARM builds of edge-broker under qemu user emulation.
#
# Usage: cross/smoke.sh [aarch64|armv7|all] [CHECK...]      (defaults: all, every check)
#
# Checks (each a function named smoke_<check>; add one and list it in ALL_CHECKS to extend):
#   version  `edge-broker --version` exits 0 and prints "edge-broker <workspace version>"
#   check    `edge-broker check --config systemd/edge-broker.toml` exits 0 (the packaged default),
#            and a config with a bad field exits non-zero and names the field
#   run      `edge-broker --config FILE` (loopback listeners on free ports, data in a temp dir)
#            opens its MQTT and NATS ports, and SIGTERM makes it exit 0 within the drain deadline
#
# binfmt_misc is not mounted on the build machines, so every ARM binary is started explicitly
# through qemu_run / qemu_start: qemu-aarch64-static -L /usr/aarch64-linux-gnu, or
# qemu-arm-static -L /usr/arm-linux-gnueabihf.
#
# Environment:
#   CARGO_TARGET_DIR, EDGE_BROKER_PROFILE   where cross/build.sh put the binaries (target/, release)
#   EDGE_BROKER_BIN        test this binary instead (only with a single target)
#   SMOKE_TIMEOUT          seconds allowed for a one-shot command (default 30; qemu is slow)
#   SMOKE_DRAIN_SECS       seconds allowed from SIGTERM to exit (default 25; systemd allows 30)
# Missing qemu is installed through cross/setup.sh; a missing binary is built with cross/build.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
ALL_CHECKS=(version check run)

die() { printf 'smoke: ERROR: %s\n' "$*" >&2; exit 2; }
note() { printf 'smoke: %s\n' "$*" >&2; }

WANT="${1:-all}"
[ $# -gt 0 ] && shift
case "$WANT" in
  all) TARGETS=(aarch64 armv7) ;;
  aarch64 | armv7) TARGETS=("$WANT") ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown target '$WANT' (expected aarch64, armv7 or all)" ;;
esac
CHECKS=("$@")
[ ${#CHECKS[@]} -gt 0 ] || CHECKS=("${ALL_CHECKS[@]}")
if [ -n "${EDGE_BROKER_BIN:-}" ] && [ ${#TARGETS[@]} -ne 1 ]; then
  die "EDGE_BROKER_BIN needs a single target (aarch64 or armv7)"
fi

PROFILE="${EDGE_BROKER_PROFILE:-release}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
SMOKE_TIMEOUT="${SMOKE_TIMEOUT:-30}"
SMOKE_DRAIN_SECS="${SMOKE_DRAIN_SECS:-25}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)"
[ -n "$VERSION" ] || die "no [workspace.package] version in $ROOT/Cargo.toml"

triple_of() { case "$1" in aarch64) echo aarch64-unknown-linux-gnu ;; armv7) echo armv7-unknown-linux-gnueabihf ;; esac; }
qemu_of() { case "$1" in aarch64) echo qemu-aarch64-static ;; armv7) echo qemu-arm-static ;; esac; }
sysroot_of() { case "$1" in aarch64) echo /usr/aarch64-linux-gnu ;; armv7) echo /usr/arm-linux-gnueabihf ;; esac; }
bin_of() {
  if [ -n "${EDGE_BROKER_BIN:-}" ]; then echo "$EDGE_BROKER_BIN"
  else echo "$TARGET_DIR/$(triple_of "$1")/$PROFILE/edge-broker"; fi
}

# --- qemu helpers (use these in new checks) --------------------------------------------------

# qemu_run TARGET ARGS... : run the target's edge-broker in the foreground under qemu,
# bounded by SMOKE_TIMEOUT; returns its exit status (124 on timeout).
qemu_run() {
  local t="$1"; shift
  timeout --kill-after=5 "$SMOKE_TIMEOUT" \
    "$(qemu_of "$t")" -L "$(sysroot_of "$t")" "$(bin_of "$t")" "$@"
}

# qemu_start TARGET LOGFILE ARGS... : start it in the background; sets QEMU_PID.
# The process is registered for cleanup on exit. Stop it with qemu_stop.
QEMU_PIDS=()
qemu_start() {
  local t="$1" logfile="$2"; shift 2
  "$(qemu_of "$t")" -L "$(sysroot_of "$t")" "$(bin_of "$t")" "$@" >"$logfile" 2>&1 &
  QEMU_PID=$!
  QEMU_PIDS+=("$QEMU_PID")
}

# alive PID : is PID running (a zombie counts as exited: kill -0 would still succeed on it)?
alive() {
  local state
  state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# qemu_stop PID SECONDS : SIGTERM, wait up to SECONDS for the exit; sets QEMU_RC to the exit
# status, or to "timeout" after a SIGKILL. Call it in this shell, not in $(...): only the
# parent shell can wait for its child.
qemu_stop() {
  local pid="$1" secs="$2" i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do
    if ! alive "$pid"; then
      QEMU_RC=0; wait "$pid" || QEMU_RC=$?
      return 0
    fi
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  QEMU_RC=timeout
}

cleanup() {
  local pid
  for pid in "${QEMU_PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  [ -n "${WORK:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT

# port_open PORT : is something listening on 127.0.0.1:PORT?
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port : a 127.0.0.1 port nobody listens on (random in the ephemeral range; best effort).
free_port() {
  local p i
  for ((i = 0; i < 50; i++)); do
    p=$((32768 + RANDOM % 28000))
    port_open "$p" || { echo "$p"; return 0; }
  done
  return 1
}

# wait_port PID PORT SECONDS : wait until PORT accepts connections while PID is alive.
wait_port() {
  local pid="$1" port="$2" secs="$3" i
  for ((i = 0; i < secs * 10; i++)); do
    port_open "$port" && return 0
    alive "$pid" || return 1
    sleep 0.1
  done
  return 1
}

# --- checks: each prints why it failed and returns non-zero ----------------------------------

smoke_version() {
  local t="$1" out rc=0
  out="$(qemu_run "$t" --version 2>&1)" || rc=$?
  if [ "$rc" -ne 0 ]; then echo "--version exited $rc: $out"; return 1; fi
  if ! grep -Eq "^edge-broker ${VERSION//./\\.}([ +-]|$)" <<<"$out"; then
    echo "--version printed '${out:-<nothing>}', expected 'edge-broker $VERSION'"; return 1
  fi
  echo "$out"
}

smoke_check() {
  local t="$1" out rc=0 bad="$WORK/bad.toml"
  out="$(qemu_run "$t" check --config "$ROOT/systemd/edge-broker.toml" 2>&1)" || rc=$?
  if [ "$rc" -ne 0 ]; then echo "check of systemd/edge-broker.toml exited $rc: $out"; return 1; fi
  cat >"$bad" <<'EOF'
[node]
id = "smoke"

[log]
fsync = "sometimes"
EOF
  rc=0; out="$(qemu_run "$t" check --config "$bad" 2>&1)" || rc=$?
  if [ "$rc" -eq 0 ]; then echo "check accepted log.fsync = \"sometimes\" (exit 0): ${out:-<no output>}"; return 1; fi
  if [ "$rc" -eq 124 ]; then echo "check of a bad config timed out"; return 1; fi
  if ! grep -q fsync <<<"$out"; then echo "check rejected the bad config (exit $rc) without naming 'fsync': $out"; return 1; fi
  echo "default config accepted; bad log.fsync rejected (exit $rc)"
}

# Writes a loopback config into $WORK/<name>.toml; sets MQTT_PORT, NATS_PORT, METRICS_PORT.
write_run_config() {
  local name="$1" kafka_port
  MQTT_PORT="$(free_port)"; NATS_PORT="$(free_port)"; METRICS_PORT="$(free_port)"
  kafka_port="$(free_port)"   # nothing listens there: the broker must run without its upstream
  mkdir -p "$WORK/$name-data"
  cat >"$WORK/$name.toml" <<EOF
[node]
id = "smoke-$name"
data_dir = "$WORK/$name-data"

[mqtt]
listen = "127.0.0.1:$MQTT_PORT"

[nats]
listen = "127.0.0.1:$NATS_PORT"

[log]
segment_bytes = "1MiB"
max_bytes = "16MiB"
fsync = "always"
when_full = "block"

[kafka]
brokers = ["127.0.0.1:$kafka_port"]

[metrics]
listen = "127.0.0.1:$METRICS_PORT"
EOF
}

smoke_run() {
  local t="$1" logf="$WORK/run-$1.log"
  write_run_config "run-$t"
  qemu_start "$t" "$logf" --config "$WORK/run-$t.toml"
  if ! wait_port "$QEMU_PID" "$MQTT_PORT" "$SMOKE_TIMEOUT"; then
    qemu_stop "$QEMU_PID" 2
    echo "MQTT port $MQTT_PORT never opened (exit: $QEMU_RC); log: $(tail -n 20 "$logf")"; return 1
  fi
  if ! port_open "$NATS_PORT"; then
    qemu_stop "$QEMU_PID" 2
    echo "NATS port $NATS_PORT not open while MQTT is; log: $(tail -n 20 "$logf")"; return 1
  fi
  # Extension point: MQTT publish -> log -> Kafka smoke test goes here, while the broker runs.
  qemu_stop "$QEMU_PID" "$SMOKE_DRAIN_SECS"
  if [ "$QEMU_RC" != 0 ]; then echo "after SIGTERM: exit $QEMU_RC (want 0 within ${SMOKE_DRAIN_SECS}s); log: $(tail -n 20 "$logf")"; return 1; fi
  echo "listened on MQTT $MQTT_PORT and NATS $NATS_PORT; SIGTERM -> exit 0"
}

# --- main ---------------------------------------------------------------------------------------

for c in "${CHECKS[@]}"; do
  declare -F "smoke_$c" >/dev/null || die "unknown check '$c' (known: ${ALL_CHECKS[*]})"
done

for t in "${TARGETS[@]}"; do
  command -v "$(qemu_of "$t")" >/dev/null && [ -d "$(sysroot_of "$t")/lib" ] || "$HERE/setup.sh" "$t"
  if [ ! -x "$(bin_of "$t")" ]; then
    [ -z "${EDGE_BROKER_BIN:-}" ] || die "EDGE_BROKER_BIN=$EDGE_BROKER_BIN is not executable"
    note "$(bin_of "$t") missing: building it"
    "$HERE/build.sh" "$t"
  fi
done

WORK="$(mktemp -d)"
fails=0
for t in "${TARGETS[@]}"; do
  for c in "${CHECKS[@]}"; do
    # Not in a $(subshell): background processes must stay registered for cleanup.
    if "smoke_$c" "$t" >"$WORK/msg" 2>&1; then
      printf 'PASS %-8s %-8s %s\n' "$t" "$c" "$(cat "$WORK/msg")"
    else
      printf 'FAIL %-8s %-8s %s\n' "$t" "$c" "$(cat "$WORK/msg")"
      fails=$((fails + 1))
    fi
  done
done
[ "$fails" -eq 0 ] || { note "$fails check(s) failed"; exit 1; }
