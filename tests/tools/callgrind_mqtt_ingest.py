#!/usr/bin/env python3
"""Instructions edge-broker spends per MQTT QoS 1 publish taken into a route (durable PUBACK),
counted by valgrind's callgrind (this VM has no hardware counters for `perf stat`).

Runs edge-broker under `valgrind --tool=callgrind --separate-threads=yes` with bench_bridge.py's
end-to-end configuration (`[[route]] mqtt = "sensors/+/t"`, key `{topic.2}`, `fsync = "always"`)
but Kafka unreachable (the forwarder only backs off), publishes --count messages with
bench_bridge.py's publishers (mqtt-blast, two connections, 16 topics each), then stops the
broker with SIGTERM so callgrind writes one output file per thread into OUT. Prints Ir per
message of the log writer and of the two busiest other threads (the tokio workers;
callgrind_threads.py tells them apart).

  .venv/bin/python tests/tools/callgrind_mqtt_ingest.py BROKER OUT [--count 200000] \
      [--blast target/release/mqtt-blast]

Under callgrind the broker runs ~30x slower, so group commits and socket reads hold fewer
messages than at full speed: compare builds with this tool, not with throughput numbers.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_bridge as bb  # noqa: E402
from callgrind_threads import report  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("broker")
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--blast", default=bb.BLAST_DEFAULT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    bb.BLAST = args.blast
    tmp = tempfile.mkdtemp(prefix="cg-mqtt-ingest-")
    log = open(os.path.join(tmp, "broker.log"), "w")
    mport, xport, kport = bb.free_port(), bb.free_port(), bb.free_port()
    callgrind = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                 f"--callgrind-out-file={args.out}/cg.out"]
    broker = bb.edge_broker(args.broker, os.path.join(tmp, "data"), mport, xport,
                            f"127.0.0.1:{kport}", log, "always", wrap=callgrind, timeout=120)
    try:
        _, n = bb.publish(mport, args.count, args.size, 2)
    finally:
        # Not bb.stop: callgrind must be given the time to write its files.
        broker.terminate()
        broker.wait(timeout=300)
    report(args.out, n, "message")
    print(f"callgrind files: {args.out}/cg.out-*; the broker's output: {tmp}/broker.log")


if __name__ == "__main__":
    main()
