#!/usr/bin/env python3
"""Instructions edge-broker spends per NATS publish in a gateway's shape, counted by valgrind's
callgrind (this VM has no hardware counters for `perf stat`): the shape of the `nats_publish`
benchmark's "gateway shape" rows, which throughput alone cannot judge on a noisy machine.

Runs edge-broker under `valgrind --tool=callgrind --separate-threads=yes` with 20 routes for
other subjects and one for `bench.>` (`fsync = "always"`), a second connection holding 100
device command subscriptions and a wildcard (none matching), then publishes --count PUBs of
--size bytes on `bench.sensor.temp` over one connection:

- `core`: `PUB bench.sensor.temp 200`, pipelined, then PING/PONG;
- `durable`: `PUB bench.sensor.temp _INBOX.bench.N 200` with up to --window unanswered, the
  publisher subscribed to `_INBOX.bench.*` (a JetStream client's shape): every PubAck goes
  through the hub to the publisher's inbox subscription.

Then it stops the broker with SIGTERM so callgrind writes one file per thread into OUT, and
prints Ir per PUB of the log writer and of the two busiest other threads (the tokio workers;
callgrind_threads.py tells them apart).

  .venv/bin/python tests/tools/callgrind_nats_ingest.py BROKER OUT [--mode core|durable]
      [--shape gateway|empty] [--count 300000] [--size 200] [--window 1000]

`--shape empty`: no routes and no other connection's subscriptions (the benchmark's "core PUB"
row; a durable PUB then gets no PubAck, so use it with `--mode core`).

Under callgrind the broker runs ~30x slower, so group commits and socket reads hold fewer
messages than at full speed: compare builds with this tool, not with throughput numbers.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_bridge import free_port  # noqa: E402
from callgrind_threads import report  # noqa: E402


def config(data, nats, mqtt, metrics, gateway):
    text = (f'[node]\nid = "bench"\ndata_dir = "{data}"\n'
            f'[mqtt]\nlisten = "127.0.0.1:{mqtt}"\n[nats]\nlisten = "127.0.0.1:{nats}"\n'
            f'[metrics]\nlisten = "127.0.0.1:{metrics}"\n[log]\nfsync = "always"\n')
    if not gateway:
        return text
    for i in range(20):
        text += f'[[route]]\nnats = "site{i}.>"\nkafka_topic = "site{i}"\n'
    return text + '[[route]]\nnats = "bench.>"\nkafka_topic = "bench"\n'


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
    return s


def until_pong(s):
    seen = b""
    while b"PONG" not in seen:
        chunk = s.recv(65536)
        assert chunk, "the broker closed the connection"
        seen = seen[-4:] + chunk


def core(pub, count, payload):
    line = b"PUB bench.sensor.temp %d\r\n%s\r\n" % (len(payload), payload)
    sent = 0
    while sent < count:
        k = min(1000, count - sent)
        pub.sendall(line * k)
        sent += k
    pub.sendall(b"PING\r\n")
    until_pong(pub)


def durable(pub, count, payload, window):
    pub.sendall(b"SUB _INBOX.bench.* 1\r\nPING\r\n")
    until_pong(pub)
    sent = acked = 0
    tail = b""
    while acked < count:
        if sent < count and sent - acked <= window - 500:
            k = min(500, count - sent)
            pub.sendall(b"".join(b"PUB bench.sensor.temp _INBOX.bench.%d %d\r\n%s\r\n"
                                 % (sent + i, len(payload), payload) for i in range(k)))
            sent += k
            continue
        chunk = pub.recv(1 << 20)
        assert chunk, "the broker closed the connection"
        seen = tail + chunk
        assert b"-ERR" not in seen, seen[-200:]
        acked += seen.count(b'"seq"')
        # What follows the last PubAck may be the start of the next one.
        last = seen.rfind(b'"seq"')
        tail = seen[last + 5:] if last >= 0 else seen[-4:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("broker")
    ap.add_argument("out")
    ap.add_argument("--mode", choices=["core", "durable"], default="core")
    ap.add_argument("--shape", choices=["gateway", "empty"], default="gateway")
    ap.add_argument("--count", type=int, default=300_000)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--window", type=int, default=1000)
    args = ap.parse_args()
    assert args.window > 500, "--window must exceed the 500 PUBs sent at a time"
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="cg-nats-ingest-")
    nats, mqtt, metrics = free_port(), free_port(), free_port()
    path = os.path.join(tmp, "edge-broker.toml")
    with open(path, "w") as f:
        f.write(config(os.path.join(tmp, "data"), nats, mqtt, metrics, args.shape == "gateway"))
    log = open(os.path.join(tmp, "broker.log"), "w")
    cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
           "--compress-strings=no",
           f"--callgrind-out-file={args.out}/cg.out", args.broker, "--config", path]
    broker = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                              env=dict(os.environ, RUST_LOG="warn"))
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", nats)).close()
                break
            except OSError:
                assert broker.poll() is None, f"the broker exited; see {tmp}/broker.log"
                assert time.time() < deadline, "the broker did not listen within 120 s"
                time.sleep(0.1)
        others = connect(nats)
        if args.shape == "gateway":
            others.sendall(b"".join(b"SUB gw.dev-%d.cmd %d\r\n" % (i, i + 10) for i in range(100))
                           + b"SUB gw.*.status 200\r\nPING\r\n")
            until_pong(others)
        pub = connect(nats)
        payload = b"x" * args.size
        start = time.time()
        if args.mode == "core":
            core(pub, args.count, payload)
        else:
            durable(pub, args.count, payload, args.window)
        print(f"{args.count} {args.mode} PUBs under callgrind in {time.time() - start:.1f} s")
        pub.close()
        others.close()
    finally:
        # callgrind must be given the time to write its files.
        broker.terminate()
        broker.wait(timeout=300)
        # The log's preallocated segments (74 MB): only the broker's output is kept.
        shutil.rmtree(os.path.join(tmp, "data"), ignore_errors=True)
    report(args.out, args.count, "PUB")
    print(f"callgrind files: {args.out}/cg.out-*; the broker's output: {tmp}/broker.log")


if __name__ == "__main__":
    main()
