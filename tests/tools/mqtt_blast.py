#!/usr/bin/env python3
"""A fast MQTT 3.1.1 QoS 1 load generator for benchmarks (raw sockets, pre-encoded packets).

Usage: mqtt_blast.py HOST PORT COUNT [--size 200] [--window 500] [--keys 16] [--prefix p0]
       [--client-id blast]
Publishes COUNT QoS 1 messages to sensors/<prefix>-<n % keys>/t with SIZE-byte payloads, at
most WINDOW unacknowledged, and prints {"records": N, "seconds": S, "rate": R} once every
PUBACK arrived. paho-mqtt tops out at a few thousand messages/s per process; this does not
stand between the broker and its benchmark.
"""
import argparse
import json
import random
import socket
import sys
import time


def remaining_length(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(s):
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--keys", type=int, default=16)
    ap.add_argument("--prefix", default="p0")
    ap.add_argument("--client-id", default="blast")
    args = ap.parse_args()

    s = socket.create_connection((args.host, args.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = string("MQTT") + bytes([4, 0x02]) + (60).to_bytes(2, "big") + string(args.client_id)
    s.sendall(bytes([0x10]) + remaining_length(len(body)) + body)
    ack = s.recv(4)
    if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
        print(f"CONNACK refused: {ack!r}", file=sys.stderr)
        return 1

    topics = [string(f"sensors/{args.prefix}-{k}/t") for k in range(args.keys)]
    # Random hex filler (about 2:1 compressible, like sensor JSON), 1024 distinct tails.
    rng = random.Random(42)
    pool = [rng.getrandbits(args.size * 4).to_bytes(args.size // 2 + 1, "big").hex().encode()
            for _ in range(1024)]
    packets = []
    for n in range(args.count):
        payload = f"msg-{n} ".encode()
        payload += pool[n % 1024][: max(0, args.size - len(payload))]
        pid = n % 65535 + 1
        var = topics[n % args.keys] + pid.to_bytes(2, "big")
        packets.append(bytes([0x32]) + remaining_length(len(var) + len(payload)) + var + payload)

    sent = acked = 0
    pending = b""
    chunk = max(1, args.window // 4)
    start = time.perf_counter()
    while acked < args.count:
        if sent < args.count and sent - acked + chunk <= args.window:
            end = min(args.count, sent + chunk)
            s.sendall(b"".join(packets[sent:end]))
            sent = end
            continue
        data = s.recv(65536)
        if not data:
            print(f"connection closed after {acked} acks", file=sys.stderr)
            return 1
        pending += data
        n = len(pending) // 4  # every packet the broker sends us is a 4-byte PUBACK
        acked += n
        pending = pending[n * 4:]
    seconds = time.perf_counter() - start
    s.sendall(bytes([0xE0, 0]))
    s.close()
    print(json.dumps({"records": args.count, "seconds": seconds, "rate": args.count / seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
