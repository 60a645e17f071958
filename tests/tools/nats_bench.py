#!/usr/bin/env python3
"""Publish throughput: edge-broker's NATS ingress vs nats-server, same client, same machine.

Starts every server itself on 127.0.0.1 ephemeral ports with temporary data directories and
stops them at the end:
  - edge-broker (release build), fsync = "always", one route matching the benchmark subject;
  - nats-server core (`nats-server -a 127.0.0.1 -p PORT`);
  - nats-server JetStream with file storage (`-js -sd DIR`) and a file-backed stream.

Modes, all with 200-byte payloads and nats-py as the client:
  core PUB     nc.publish() N times, then a flush (PING/PONG) — fire and forget;
  durable ack  js.publish_async() with up to --inflight outstanding, then wait for every ack
               (edge-broker: PubAck after fdatasync of the log; JetStream: after the file store).

  .venv/bin/python tests/tools/nats_bench.py --edge-broker target/release/edge-broker
"""
import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import nats

PAYLOAD = b"x" * 200
SUBJECT = "bench.sensor.temp"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}")


def start_edge(binary, tmp):
    port, mport, hport = free_port(), free_port(), free_port()
    cfg = os.path.join(tmp, "edge.toml")
    with open(cfg, "w") as f:
        f.write(f"""[node]
id = "bench"
data_dir = "{tmp}/edge-data"
[mqtt]
listen = "127.0.0.1:{mport}"
[nats]
listen = "127.0.0.1:{port}"
[metrics]
listen = "127.0.0.1:{hport}"
[log]
fsync = "always"
[[route]]
nats = "bench.>"
kafka_topic = "bench"
""")
    proc = subprocess.Popen([binary, "--config", cfg], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


def start_nats(tmp, jetstream):
    port = free_port()
    args = ["nats-server", "-a", "127.0.0.1", "-p", str(port)]
    if jetstream:
        args += ["-js", "-sd", os.path.join(tmp, "js")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def core(port, n):
    nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False,
                            pending_size=64 * 1024 * 1024)
    start = time.perf_counter()
    for _ in range(n):
        await nc.publish(SUBJECT, PAYLOAD)
    await nc.flush(timeout=60)
    elapsed = time.perf_counter() - start
    await nc.close()
    return n / elapsed


async def durable(port, n, inflight, create_stream):
    nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False,
                            pending_size=64 * 1024 * 1024)
    js = nc.jetstream(publish_async_max_pending=inflight, timeout=30)
    if create_stream:
        from nats.js.api import StorageType
        await js.add_stream(name="bench", subjects=["bench.>"], storage=StorageType.FILE)
    # Warm up (connection, reply subscription) outside the measurement.
    await js.publish(SUBJECT, PAYLOAD)
    futures = []
    start = time.perf_counter()
    for _ in range(n):
        futures.append(await js.publish_async(SUBJECT, PAYLOAD))
    acks = await asyncio.gather(*futures)
    elapsed = time.perf_counter() - start
    seqs = [a.seq for a in acks]
    assert seqs == sorted(seqs) and len(set(seqs)) == n, "acks out of order or repeated"
    await nc.close()
    return n / elapsed


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--edge-broker", required=True)
    p.add_argument("--core-messages", type=int, default=200_000)
    p.add_argument("--durable-messages", type=int, default=50_000)
    p.add_argument("--inflight", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if not shutil.which("nats-server"):
        raise SystemExit("nats-server is not installed: apt-get install nats-server")
    results = {}

    def record(key, value):
        results.setdefault(key, []).append(value)

    for _ in range(args.rounds):
        for target in ("edge", "nats", "jetstream"):
            with tempfile.TemporaryDirectory() as tmp:
                if target == "edge":
                    proc, port = start_edge(args.edge_broker, tmp)
                else:
                    proc, port = start_nats(tmp, jetstream=(target == "jetstream"))
                try:
                    if target != "jetstream":
                        record((target, "core"), asyncio.run(core(port, args.core_messages)))
                    if target != "nats":
                        record((target, "durable"), asyncio.run(
                            durable(port, args.durable_messages, args.inflight,
                                    create_stream=(target == "jetstream"))))
                finally:
                    stop(proc)

    def best(key):
        return max(results[key])

    rows = [
        ("core PUB, no reply", "edge-broker", best(("edge", "core"))),
        ("core PUB, no reply", "nats-server 2.9.10", best(("nats", "core"))),
        ("durable ack (js.publish_async)", "edge-broker, fsync=always", best(("edge", "durable"))),
        ("durable ack (js.publish_async)", "nats-server JetStream, file store",
         best(("jetstream", "durable"))),
    ]
    print(f"| mode | server | msg/s (best of {args.rounds}) |")
    print("|---|---|---:|")
    for mode, server, rate in rows:
        print(f"| {mode} | {server} | {rate:,.0f} |")
    ratio = best(("edge", "durable")) / best(("jetstream", "durable"))
    print(f"\ndurable ack ratio edge-broker / JetStream file store: {ratio:.2f}x "
          f"(goal >= 2x); core ratio: {best(('edge', 'core')) / best(('nats', 'core')):.2f}x")
    print(f"all rounds: " + ", ".join(f"{k[0]}/{k[1]}: " + "/".join(f"{v:,.0f}" for v in vs)
                                     for k, vs in results.items()))


if __name__ == "__main__":
    main()
