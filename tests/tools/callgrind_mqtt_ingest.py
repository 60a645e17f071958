#!/usr/bin/env python3
"""Instructions edge-broker spends per MQTT QoS 1 publish taken into a route (durable PUBACK),
counted by valgrind's callgrind (this VM has no hardware counters for `perf stat`).

Starts edge-broker under `valgrind --tool=callgrind --separate-threads=yes` with
`[[route]] mqtt = "sensors/+/t"` (key `{topic.2}`, as bench_bridge.py) and `fsync = "always"`,
Kafka unreachable (the forwarder only backs off), runs mqtt-blast COUNT messages of 200 B over
two connections (window 5000, 16 topics each), then stops the broker with SIGTERM so callgrind
writes one output file per thread into OUT. Prints Ir per message of the two busiest threads
(the tokio workers) and of the log writer (`edge-log-writer`).

  .venv/bin/python tests/tools/callgrind_mqtt_ingest.py BROKER OUT [--count 200000] \
      [--blast target/release/mqtt-blast]

Under callgrind the broker runs ~30x slower, so group commits and socket reads hold fewer
messages than at full speed: compare builds with this tool, not with throughput numbers.
"""
import argparse
import glob
import os
import re
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("broker")
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--blast", default=os.path.join(HERE, "..", "..", "target", "release", "mqtt-blast"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    d = tempfile.mkdtemp(prefix="cg-mqtt-ingest-")
    mqtt, kafka, metrics, nats = free_port(), free_port(), free_port(), free_port()
    cfg = os.path.join(d, "edge-broker.toml")
    with open(cfg, "w") as f:
        f.write(f"""[node]
id = "bench"
data_dir = "{d}/data"
[mqtt]
listen = "127.0.0.1:{mqtt}"
[metrics]
listen = "127.0.0.1:{metrics}"
[nats]
listen = "127.0.0.1:{nats}"
[log]
fsync = "always"
[kafka]
brokers = ["127.0.0.1:{kafka}"]
compression = "lz4"
[[route]]
mqtt = "sensors/+/t"
kafka_topic = "bench"
key = "{{topic.2}}"
""")
    broker = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--separate-threads=yes",
         f"--callgrind-out-file={args.out}/cg.out", args.broker, "--config", cfg],
        env=dict(os.environ, RUST_LOG="warn"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", mqtt)).close()
                break
            except OSError:
                if time.time() > deadline or broker.poll() is not None:
                    raise SystemExit("edge-broker did not start under valgrind")
                time.sleep(0.1)
        subprocess.run([args.blast, "127.0.0.1", str(mqtt), str(args.count), "--size", "200",
                        "--window", "5000", "--keys", "16", "--connections", "2",
                        "--client-id", "bench"], check=True, stdout=subprocess.DEVNULL)
    finally:
        broker.terminate()
        broker.wait(timeout=300)
    threads = []
    for path in glob.glob(os.path.join(args.out, "cg.out-*")):
        text = open(path, errors="replace").read()
        ir = int(re.search(r"^summary: (\d+)", text, re.M).group(1))
        threads.append((ir, path))
    threads.sort(reverse=True)
    workers = sum(ir for ir, _ in threads[:2])
    print(f"tokio workers (two busiest threads): {workers / args.count:,.0f} Ir per message")
    if len(threads) > 2:
        print(f"third busiest (the log writer): {threads[2][0] / args.count:,.0f} Ir per message")
    print(f"callgrind files: {args.out}/cg.out-*")


if __name__ == "__main__":
    main()
