#!/usr/bin/env bash
# Memory footprint of edge-broker next to Mosquitto, measured in the same run on this machine.
#
# Usage: cross/footprint.sh [CLIENTS]      (default 1000)
#
# Starts both brokers on free 127.0.0.1 ports:
#   edge-broker  the x86_64 release build of cross/build.sh (EDGE_BROKER_BIN to override), a
#                [[route]] for sensors/#, fsync "always", data in a temp dir, /metrics on;
#   mosquitto    Debian's, config `listener PORT 127.0.0.1`, `allow_anonymous true`,
#                `persistence false`.
# Measures VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) of each after 3 s idle,
# then again after CLIENTS idle MQTT 3.1.1 connections (cross/idle_clients.py: CONNECT,
# CONNACK, then silence) are held open to each broker (read 3 s + PARK_SECS after the last
# connected), and prints a Markdown table.
# Nothing leaves loopback; everything started is stopped on exit.
#
# Environment:
#   EDGE_BROKER_BIN   binary to measure (default $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/edge-broker,
#                     built with cross/build.sh x86_64 when missing)
#   SETTLE_SECS       seconds to wait before each reading (default 3)
#   PARK_SECS         seconds more before the reading with clients: edge-broker parks a
#                     connection idle for mqtt.park_idle_after (default 5, its default)
#   KEEPALIVE_SECS    keep alive the idle MQTT clients announce (default 0: none; they never
#                     ping, so choose more than the run lasts, e.g. 600)
#   FOOTPRINT_RESULTS append the readings (KiB) to this file as JSON lines (bench/table.py)
#   FOOTPRINT_ROUND   round number for those lines (tag "CLIENTS/rN"; bench/run.sh runs several:
#                     one idle reading swings by ~150 KiB between runs)
#   FOOTPRINT_MAPS=1  also print the idle edge-broker's memory by mapping (cross/rss_maps.py:
#                     binary text/rodata, each library, anonymous) and what it used in 10 s idle
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cross/idle_broker.sh
. "$HERE/idle_broker.sh"
ROOT="$(cd "$HERE/.." && pwd)"
CLIENTS="${1:-1000}"
SETTLE_SECS="${SETTLE_SECS:-3}"
PARK_SECS="${PARK_SECS:-5}"
case "$CLIENTS" in -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
[[ "$CLIENTS" =~ ^[0-9]+$ ]] || { echo "footprint: CLIENTS must be a number" >&2; exit 2; }

die() { printf 'footprint: ERROR: %s\n' "$*" >&2; exit 2; }
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BIN="${EDGE_BROKER_BIN:-$TARGET_DIR/x86_64-unknown-linux-gnu/release/edge-broker}"
if [ ! -x "$BIN" ]; then
  [ -z "${EDGE_BROKER_BIN:-}" ] || die "EDGE_BROKER_BIN=$BIN is not executable"
  "$HERE/build.sh" x86_64
fi
command -v mosquitto >/dev/null || die "mosquitto is missing: apt-get install mosquitto"
command -v python3 >/dev/null || die "python3 is missing: apt-get install python3"
# Both brokers and both client processes need a descriptor per connection.
ulimit -n "$(( $(ulimit -Hn) < 65536 ? $(ulimit -Hn) : 65536 ))"

PIDS=()
WORK="$(mktemp -d)"
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# free_port : a port the kernel just handed out for 127.0.0.1 (bound, then released).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  local i
  for ((i = 0; i < 300; i++)); do port_open "$1" && return 0; sleep 0.1; done
  die "nothing listens on $1 after 30 s; edge-broker log: $(tail -n 5 "$WORK/edge-broker.log"); mosquitto log: $(tail -n 5 "$WORK/mosquitto.log")"
}
# kib FIELD FILE PID : a "Field:   N kB" line of /proc/PID/FILE, in KiB.
kib() { awk -v f="$1:" '$1 == f { print $2; exit }' "/proc/$3/$2"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

EDGE_PORT="$(free_port)"; METRICS_PORT="$(free_port)"; MOSQ_PORT="$(free_port)"
# NATS on a free port too: the default 4222 may be taken by another broker on this machine.
NATS_PORT="$(free_port)"
idle_broker_toml footprint "$WORK/edge-data" "$EDGE_PORT" "$NATS_PORT" "$METRICS_PORT" \
  "$((CLIENTS + 100))" >"$WORK/edge-broker.toml"
cat >"$WORK/mosquitto.conf" <<EOF
listener $MOSQ_PORT 127.0.0.1
allow_anonymous true
persistence false
log_dest none
EOF

"$BIN" --config "$WORK/edge-broker.toml" >"$WORK/edge-broker.log" 2>&1 &
EDGE_PID=$!; PIDS+=("$EDGE_PID")
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
MOSQ_PID=$!; PIDS+=("$MOSQ_PID")
wait_port "$EDGE_PORT"; wait_port "$MOSQ_PORT"
sleep "$SETTLE_SECS"
declare -A R
for b in edge:$EDGE_PID mosq:$MOSQ_PID; do
  R[${b%%:*}_idle_rss]="$(kib VmRSS status "${b#*:}")"
  R[${b%%:*}_idle_pss]="$(kib Pss smaps_rollup "${b#*:}")"
done

if [ "${FOOTPRINT_MAPS:-0}" = 1 ]; then
  printf '\nedge-broker idle, by mapping (KiB):\n'
  python3 "$HERE/rss_maps.py" "$EDGE_PID" 10
fi

# hold CLIENTS idle connections to each broker, both at once
for b in edge:$EDGE_PORT mosq:$MOSQ_PORT; do
  python3 "$HERE/idle_clients.py" --port "${b#*:}" --count "$CLIENTS" --prefix "fp-${b%%:*}" \
    --keepalive "${KEEPALIVE_SECS:-0}" \
    >"$WORK/clients-${b%%:*}.out" 2>&1 &
  PIDS+=("$!")
done
for b in edge mosq; do
  for ((i = 0; i < 1200; i++)); do
    # One read, judged only once a whole line is there: a line read half written ("rea")
    # was taken for an error.
    said="$(cat "$WORK/clients-$b.out" 2>/dev/null; echo .)"; said="${said%.}"
    if [[ "$said" == *$'\n' ]]; then
      [[ "$said" == ready* ]] && break
      die "clients of $b: $said"
    fi
    sleep 0.1
  done
  grep -q '^ready' "$WORK/clients-$b.out" || die "clients of $b not connected after 120 s"
done
# edge-broker parks a connection idle for mqtt.park_idle_after (5 s by default): the reading
# waits that much longer (for both brokers), so that it is of the broker's steady idle state.
sleep "$((SETTLE_SECS + PARK_SECS))"
for b in edge:$EDGE_PID mosq:$MOSQ_PID; do
  R[${b%%:*}_busy_rss]="$(kib VmRSS status "${b#*:}")"
  R[${b%%:*}_busy_pss]="$(kib Pss smaps_rollup "${b#*:}")"
  R[${b%%:*}_threads]="$(kib Threads status "${b#*:}")"
done
edge_conns="$(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null | awk '$1 ~ /^edge_connections($|[{])/ { s += $2 } END { print s }')" || true
edge_parked="$(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null | awk '$1 == "edge_mqtt_connections_parked" { print $2 }')" || true

printf '\n%s (%s), %s, %s clients, %s, kernel %s\n' "$("$BIN" --version)" "$BIN" \
  "$(mosquitto -h 2>/dev/null | head -n1 | sed 's/ is an MQTT.*//')" "$CLIENTS" "$(date -u +%F)" "$(uname -r)"
[ -z "$edge_conns" ] || printf 'edge-broker /metrics edge_connections = %s, edge_mqtt_connections_parked = %s\n' "$edge_conns" "${edge_parked:-?}"
printf '\n| broker | idle RSS | idle PSS | RSS, %s idle clients | PSS, %s idle clients | per client (RSS) | threads |\n' "$CLIENTS" "$CLIENTS"
printf '|---|---:|---:|---:|---:|---:|---:|\n'
for b in edge mosq; do
  name=edge-broker; [ "$b" = mosq ] && name=mosquitto
  per="$(awk -v a="${R[${b}_busy_rss]}" -v i="${R[${b}_idle_rss]}" -v n="$CLIENTS" 'BEGIN { if (n > 0) printf "%.1f KiB", (a - i) / n; else print "-" }')"
  printf '| %s | %s MiB | %s MiB | %s MiB | %s MiB | %s | %s |\n' "$name" \
    "$(mib "${R[${b}_idle_rss]}")" "$(mib "${R[${b}_idle_pss]}")" \
    "$(mib "${R[${b}_busy_rss]}")" "$(mib "${R[${b}_busy_pss]}")" "$per" "${R[${b}_threads]}"
done
ratio="$(awk -v e="${R[edge_busy_rss]}" -v m="${R[mosq_busy_rss]}" 'BEGIN { printf "%.2f", e / m }')"
printf '\nedge-broker / mosquitto RSS with %s clients: %s x (issue 17 goal: <= 1)\n' "$CLIENTS" "$ratio"
if [ -n "${FOOTPRINT_RESULTS:-}" ]; then
  for b in edge mosq; do
    for m in idle_rss busy_rss; do
      printf '{"bench":"footprint","tag":"%s","row":"%s","metric":"%s_kib","value":%s}\n' \
        "$CLIENTS${FOOTPRINT_ROUND:+/r$FOOTPRINT_ROUND}" "$b" "$m" "${R[${b}_${m}]}" >>"$FOOTPRINT_RESULTS"
    done
  done
fi
