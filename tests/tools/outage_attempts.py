#!/usr/bin/env python3
"""What an outage costs on the uplink: edge-broker builds side by side, each with one record to
forward and its Kafka broker a closed port (the network up, Kafka down: every connection is
refused), print their failed connection setups (retries and probes,
`edge_kafka_connection_setup_failures_total`) at the given times. A failed setup is a SYN and
a reset, ~150 bytes on the wire; on a metered uplink that is what a long outage costs.

  python3 tests/tools/outage_attempts.py LABEL=BINARY [LABEL=BINARY ...] [--at 10,30,60,90]

Each broker gets a temporary data directory and ephemeral ports, and is stopped at the end.
Needs `mosquitto_pub` (Debian's mosquitto-clients) for the record.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_bridge import free_port, wait_port  # noqa: E402


def failed_setups(metrics_port):
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("edge_kafka_connection_setup_failures_total"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("builds", nargs="+", help="LABEL=BINARY")
    ap.add_argument("--at", default="10,30,60,90", help="seconds after the record, comma-separated")
    args = ap.parse_args()
    closed = free_port()  # nothing listens there: every connection is refused
    tmp = tempfile.mkdtemp(prefix="outage-attempts-")
    brokers = []
    try:
        for spec in args.builds:
            label, binary = spec.split("=", 1)
            data = os.path.join(tmp, label)
            os.makedirs(data)
            mqtt, metrics, nats = free_port(), free_port(), free_port()
            config = os.path.join(data, "edge-broker.toml")
            with open(config, "w") as f:
                f.write(f"""[node]
id = "outage-{label}"
data_dir = "{data}/data"
[mqtt]
listen = "127.0.0.1:{mqtt}"
[nats]
listen = "127.0.0.1:{nats}"
[metrics]
listen = "127.0.0.1:{metrics}"
[kafka]
brokers = ["127.0.0.1:{closed}"]
[[route]]
mqtt = "s/#"
kafka_topic = "t"
""")
            p = subprocess.Popen([binary, "--config", config], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            brokers.append((label, p, metrics))
            wait_port(metrics)
            wait_port(mqtt)
            subprocess.run(["mosquitto_pub", "-p", str(mqtt), "-t", "s/1", "-m", "x", "-q", "1"],
                           check=True)
        start = time.monotonic()
        print("| s | " + " | ".join(label for label, _, _ in brokers) + " |")
        print("|---:|" + "---:|" * len(brokers))
        for at in (int(a) for a in args.at.split(",")):
            time.sleep(max(0.0, start + at - time.monotonic()))
            counts = [f"{failed_setups(m):.0f}" for _, _, m in brokers]
            print(f"| {at} | " + " | ".join(counts) + " |", flush=True)
    finally:
        for _, p, _ in brokers:
            p.send_signal(signal.SIGTERM)
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
