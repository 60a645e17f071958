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
      [--blast target/release/mqtt-blast] [--subscribe QOS]

`--subscribe 0|1` adds one subscriber to `sensors/#` at that QoS (a raw MQTT 3.1.1 client
in this script that acknowledges QoS 1 deliveries as it reads them), so every publish is also
delivered: the shape of mqtt-bench's routed rows, except that the subscriber's queue may hold
the whole run (under callgrind, pacing the publishers for a full queue would outlast
`slow_subscriber_wait` and drop). It must receive every message, or the tool fails.

Under callgrind the broker runs ~30x slower, so group commits and socket reads hold fewer
messages than at full speed: compare builds with this tool, not with throughput numbers.
"""
import argparse
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_bridge as bb  # noqa: E402
from callgrind_threads import report  # noqa: E402


class Subscriber(threading.Thread):
    """One MQTT 3.1.1 connection subscribed to `sensors/#` at `qos`; counts PUBLISHes and
    answers each QoS 1 one with its PUBACK."""

    def __init__(self, port, qos, expected):
        super().__init__(daemon=True)
        self.expected, self.count, self.error = expected, 0, None
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=300)
        self.buf, self.at = b"", 0
        cid = b"cg-sub"
        # Keep-alive 0: a subscriber that only reads never sends PINGREQ.
        body = b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack(">H", len(cid)) + cid
        self.sock.sendall(bytes([0x10, len(body)]) + body)
        assert self.packet()[0] >> 4 == 2, "no CONNACK"
        flt = b"sensors/#"
        body = b"\x00\x01" + struct.pack(">H", len(flt)) + flt + bytes([qos])
        self.sock.sendall(bytes([0x82, len(body)]) + body)
        first, rest = self.packet()
        assert first >> 4 == 9 and rest[-1] == qos, f"SUBACK refused: {rest!r}"

    def read(self, n):
        while len(self.buf) - self.at < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("the broker closed the subscriber")
            self.buf = self.buf[self.at:] + chunk
            self.at = 0
        out = self.buf[self.at:self.at + n]
        self.at += n
        return out

    def packet(self):
        first = self.read(1)[0]
        length, shift = 0, 0
        while True:
            b = self.read(1)[0]
            length |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        return first, self.read(length)

    def run(self):
        try:
            while self.count < self.expected:
                first, body = self.packet()
                if first >> 4 != 3:
                    continue
                self.count += 1
                if (first >> 1) & 3 == 1:
                    topic_len = struct.unpack(">H", body[:2])[0]
                    self.sock.sendall(b"\x40\x02" + body[2 + topic_len:4 + topic_len])
        except Exception as e:  # reported by main
            self.error = e


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("broker")
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--blast", default=bb.BLAST_DEFAULT)
    ap.add_argument("--subscribe", type=int, choices=(0, 1), default=None,
                    help="add one subscriber to sensors/# at this QoS")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    bb.BLAST = args.blast
    tmp = tempfile.mkdtemp(prefix="cg-mqtt-ingest-")
    log = open(os.path.join(tmp, "broker.log"), "w")
    mport, xport, kport = bb.free_port(), bb.free_port(), bb.free_port()
    callgrind = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                 "--compress-strings=no",
                 f"--callgrind-out-file={args.out}/cg.out"]
    broker = bb.edge_broker(args.broker, os.path.join(tmp, "data"), mport, xport,
                            f"127.0.0.1:{kport}", log, "always", wrap=callgrind, timeout=120,
                            # The subscriber's queue holds the whole run: under callgrind,
                            # pacing the publishers would outlast slow_subscriber_wait.
                            mqtt_extra=f"max_queued_messages = {args.count}\n"
                                       'max_queued_bytes = "1GiB"\nmax_queued_bytes_total = "1GiB"')
    try:
        sub = None
        if args.subscribe is not None:
            sub = Subscriber(mport, args.subscribe, args.count)
            sub.start()
        _, n = bb.publish(mport, args.count, args.size, 2)
        if sub is not None:
            sub.join(timeout=300)
            if sub.count != n:
                raise SystemExit(f"the subscriber received {sub.count} of {n} ({sub.error})")
    finally:
        # Not bb.stop: callgrind must be given the time to write its files.
        broker.terminate()
        broker.wait(timeout=300)
        # The log's preallocated segments (74 MB): only the broker's output is kept.
        shutil.rmtree(os.path.join(tmp, "data"), ignore_errors=True)
    report(args.out, n, "message")
    print(f"callgrind files: {args.out}/cg.out-*; the broker's output: {tmp}/broker.log")


if __name__ == "__main__":
    main()
