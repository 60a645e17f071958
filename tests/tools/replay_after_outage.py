#!/usr/bin/env python3
"""How soon the replay starts after a Kafka outage: each edge-broker build holds one record
while its Kafka (Tansu) is down for SECS seconds, then Tansu starts; prints the seconds from
Tansu listening to the record acknowledged (`edge_kafka_forwarded_records_total`). The wait
is the forwarder's probe interval at that point of the outage, plus the reconnection.

  .venv/bin/python tests/tools/replay_after_outage.py LABEL=BINARY [LABEL=BINARY ...] [--down 75]

Builds run one after the other, each with its own Tansu and data directory; every process is
stopped at the end. Needs Tansu (tests/requirements.txt) and `mosquitto_pub`.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_bridge as bb  # noqa: E402


def replay_after(binary, down, tmp, log):
    """Seconds from Kafka listening to the held record acknowledged, after `down` s down."""
    kafka_port = bb.free_port()
    mqtt, metrics = bb.free_port(), bb.free_port()
    broker = bb.edge_broker(binary, tempfile.mkdtemp(dir=tmp), mqtt, metrics,
                            f"127.0.0.1:{kafka_port}", log, "always")
    kafka = None
    try:
        bb.publish_one(mqtt)
        time.sleep(down)
        kafka = bb.tansu(kafka_port, log, settle=0)
        up = time.perf_counter()
        deadline = time.monotonic() + 60
        while (bb.metric(metrics, "edge_kafka_forwarded_records_total") or 0) < 1:
            if time.monotonic() > deadline:
                raise SystemExit(f"{binary}: nothing forwarded 60 s after Kafka came back")
            time.sleep(0.01)
        return time.perf_counter() - up
    finally:
        if kafka is not None:
            bb.stop(kafka)
        bb.stop(broker)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("builds", nargs="+", help="LABEL=BINARY")
    ap.add_argument("--down", type=float, default=75.0, help="seconds Kafka is down")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="replay-after-outage-")
    try:
        with open(os.path.join(tmp, "peers.log"), "w") as log:
            for spec in args.builds:
                label, binary = spec.split("=", 1)
                took = replay_after(binary, args.down, tmp, log)
                print(f"{label}: Kafka down {args.down:.0f} s, the held record acknowledged "
                      f"{took:.2f} s after it listened", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
