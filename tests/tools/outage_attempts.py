#!/usr/bin/env python3
"""What an outage costs on the uplink: edge-broker builds side by side, each with one record to
forward and its Kafka broker a closed port (the network up, Kafka down: every connection is
refused), print their failed connection setups (retries and probes,
`edge_kafka_connection_setup_failures_total`) at the given times. A failed setup is a SYN and
a reset, ~150 bytes on the wire; on a metered uplink that is what a long outage costs.

  python3 tests/tools/outage_attempts.py LABEL=BINARY [LABEL=BINARY ...] [--at 10,30,60,90]

Each broker is started as `bench_bridge.py` starts it (a temporary data directory, ephemeral
ports) and stopped at the end. Needs `mosquitto_pub` (Debian's mosquitto-clients).
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_bridge as bb  # noqa: E402


def failed_setups(metrics_port):
    """edge_kafka_connection_setup_failures_total, summed over its labels."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("edge_kafka_connection_setup_failures_total"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("builds", nargs="+", help="LABEL=BINARY")
    ap.add_argument("--at", default="10,30,60,90", help="seconds after the record, comma-separated")
    args = ap.parse_args()
    closed = f"127.0.0.1:{bb.free_port()}"  # nothing listens there: every connection is refused
    tmp = tempfile.mkdtemp(prefix="outage-attempts-")
    brokers = []
    try:
        with open(os.path.join(tmp, "brokers.log"), "w") as log:
            for spec in args.builds:
                label, binary = spec.split("=", 1)
                mqtt, metrics = bb.free_port(), bb.free_port()
                p = bb.edge_broker(binary, os.path.join(tmp, label), mqtt, metrics, closed, log,
                                   "always", node=f"outage-{label}")
                brokers.append((label, p, metrics))
                bb.publish_one(mqtt)
            start = time.monotonic()
            print("| s | " + " | ".join(label for label, _, _ in brokers) + " |")
            print("|---:|" + "---:|" * len(brokers))
            for at in (int(a) for a in args.at.split(",")):
                time.sleep(max(0.0, start + at - time.monotonic()))
                counts = [f"{failed_setups(m):.0f}" for _, _, m in brokers]
                print(f"| {at} | " + " | ".join(counts) + " |", flush=True)
    finally:
        for _, p, _ in brokers:
            bb.stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
