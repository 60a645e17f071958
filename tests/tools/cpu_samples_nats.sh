#!/usr/bin/env bash
# CPU time a NATS core PUB costs each process and thread, sampled: perf's cpu-clock (a software
# event: this VM has no hardware counters) at 1999 Hz on every CPU while the nats_publish bench
# runs its core rows (empty broker and gateway shape, N PUBs each) for one build, then
# nats-server's. Prints samples per million PUBs by thread name (edge-broker: the connection
# tasks; edge-log-writer, edge-log-syncer; nats-server's whole process; nats_publish-*: the
# client). Unlike throughput on this noisy 2-core machine, and unlike callgrind's instruction
# counts, it sees cache lines moving between cores and locked instructions waiting for stores.
#
#   tests/tools/cpu_samples_nats.sh LABEL=BINARY ...   (N=4000000 by default; builds in turn)
#
# Needs perf (Debian's linux-perf) and the bench built:
#   cargo bench --locked -p edge-broker --bench nats_publish --no-run
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
n=${N:-4000000}
bench=$(ls "$root"/target/release/deps/nats_publish-* | grep -v '\.d$' | head -1)
[ -x "$bench" ] || { echo "build the bench first: cargo bench -p edge-broker --bench nats_publish --no-run" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf missing: apt-get install linux-perf" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '| build | thread | samples per 1M PUBs |\n|---|---|---:|\n'
for spec in "$@"; do
    label=${spec%%=*}
    flock -o /tmp/cpu.lock bash -c '
        perf record -a -F 1999 -e cpu-clock -o "$1/perf.data" >/dev/null 2>&1 &
        p=$!; sleep 0.5
        "$2" --rounds 1 --core "$3" --durable 2000 --js-always 0 --edge-broker "$4" \
            --nats-server "$5/.venv/bin/nats-server" >"$1/bench.txt" 2>&1
        kill -INT $p; wait $p || true' _ "$out" "$bench" "$n" "$spec" "$root"
    perf script -i "$out/perf.data" -F comm 2>/dev/null | sort | uniq -c |
        awk -v l="$label" -v n="$n" '$2 ~ /^(edge-broker|edge-log|nats-server|nats_publish)/ {
            printf "| %s | %s | %.0f |\n", l, $2, $1 / (2 * n / 1e6) }'
    grep -E '^\| core' "$out/bench.txt" >&2
done
