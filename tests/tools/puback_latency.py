#!/usr/bin/env python3
"""PUBACK latency beside the disk's: one routed QoS 1 publish at a time (fsync = "always"),
the broker's own fdatasync histogram (`edge_log_fsync_seconds`) read before and after, and a
probe (4 KiB append + fdatasync, as many as the publishes) run in six turns with them in the
broker's data directory. Whether an ack's tail is the disk's, or the broker's syncs': the share
of acks, of the broker's fdatasyncs and of the probe's over each bound, side by side.

  .venv/bin/python tests/tools/puback_latency.py [--rounds 4] [--count 10000] LABEL=BROKER...

Builds run in turn, round after round (the disk's tail moves from run to run). A debug build
is refused: time a release build. Prints one line per run.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqtt_raw import PUBACK, Client  # noqa: E402

BOUNDS = ["0.0005", "0.001", "0.002"]
# Turns in which the publishes and the probe's fdatasyncs alternate.
TURNS = 6


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fsyncs(port):
    """The fdatasync histogram: {le: count} and its total under "count"."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("edge_log_fsync_seconds_bucket"):
            out[line.split('le="')[1].split('"')[0]] = float(line.split()[1])
        elif line.startswith("edge_log_fsync_seconds_count"):
            out["count"] = float(line.split()[1])
    return out


def wait_for(port, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def run(binary, count):
    data = tempfile.mkdtemp(prefix="puback-latency-")
    mqtt, metrics = free_port(), free_port()
    config = os.path.join(data, "edge-broker.toml")
    with open(config, "w") as f:
        f.write(
            f'[node]\ndata_dir = "{data}/data"\n[mqtt]\nlisten = "127.0.0.1:{mqtt}"\n'
            f'[nats]\nenabled = false\n[metrics]\nlisten = "127.0.0.1:{metrics}"\n'
            '[log]\nfsync = "always"\nsegment_bytes = "64MiB"\nmax_bytes = "4GiB"\n'
            '[kafka]\nenabled = false\n[[route]]\nmqtt = "bench/#"\nkafka_topic = "bench"\n'
        )
    broker = subprocess.Popen([binary, "--config", config],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(mqtt)
        client = Client("127.0.0.1", mqtt, v5=False, timeout=10)
        client.connect("latency")
        before = fsyncs(metrics)
        acks, probes = [], []
        payload = b"x" * 200
        probe = os.open(os.path.join(data, "fdatasync-probe"), os.O_WRONLY | os.O_CREAT, 0o644)
        block = b"x" * 4096
        for turn in range(TURNS):
            share = count // TURNS + (turn < count % TURNS)
            for _ in range(share):
                started = time.perf_counter()
                client.publish("bench/latency", payload, qos=1, packet_id=len(acks) % 60000 + 1)
                while client.recv(10)["type"] != PUBACK:
                    pass
                acks.append(time.perf_counter() - started)
            for _ in range(share):
                os.write(probe, block)
                started = time.perf_counter()
                os.fdatasync(probe)
                probes.append(time.perf_counter() - started)
        os.close(probe)
        after = fsyncs(metrics)
        client.close()
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(data)
    acks.sort()
    synced = after["count"] - before["count"]
    probes.sort()
    line = [f"p50 {acks[count // 2] * 1e6:.0f} µs, p99 {acks[int(count * 0.99)] * 1e6:.0f} µs"
            f" (probe p50 {probes[count // 2] * 1e6:.0f}, p99 {probes[int(count * 0.99)] * 1e6:.0f})"]
    for bound in BOUNDS:
        slow_syncs = synced - (after.get(bound, 0) - before.get(bound, 0))
        slow_acks = sum(a > float(bound) for a in acks)
        slow_probes = sum(p > float(bound) for p in probes)
        line.append(f"over {float(bound) * 1e3:g} ms: acks {100 * slow_acks / count:.2f}%,"
                    f" fdatasyncs {100 * slow_syncs / max(synced, 1):.2f}%,"
                    f" probe {100 * slow_probes / count:.2f}%")
    return f"{synced:.0f} fdatasyncs; " + "; ".join(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("brokers", nargs="+", metavar="LABEL=BROKER")
    args = parser.parse_args()
    brokers = [b.split("=", 1) for b in args.brokers]
    for label, binary in brokers:
        if "/debug/" in binary:
            raise SystemExit(f"{label}: {binary} is a debug build; time a release build")
    for r in range(args.rounds):
        for label, binary in brokers:
            print(f"round {r + 1}, {label}: {run(binary, args.count)}", flush=True)


if __name__ == "__main__":
    main()
