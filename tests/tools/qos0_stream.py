#!/usr/bin/env python3
"""One QoS 0 stream to one local subscriber: how fast the broker delivers over loopback.

Usage: qos0_stream.py HOST PORT [--count 50000] [--size 200]
A 3.1.1 subscriber to `b/t` reads as fast as it can; a publisher writes COUNT QoS 0 PUBLISHes
of SIZE bytes in one go. Prints {"received": N, "seconds": S, "rate": R}, timed from the first
byte sent to the last byte received. Used for BENCHMARKS.md, "Kernel send buffers": a broker
socket whose whole send buffer is bounded below twice loopback's 64 KiB segment delivers a few
thousand messages/s here, where an unbounded one delivers about a million.
"""
import argparse
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqtt_raw import Client, frame, mstr  # noqa: E402

TOPIC = "b/t"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--count", type=int, default=50000)
    ap.add_argument("--size", type=int, default=200)
    args = ap.parse_args()
    packet = frame(0x30, mstr(TOPIC) + b"x" * args.size)
    expected = args.count * len(packet)

    sub = Client(args.host, args.port, v5=False, timeout=10)
    sub.connect("qos0-stream-sub")
    sub.subscribe((TOPIC, 0))
    got = {"bytes": 0, "at": 0.0}

    def read():
        sock = sub.sock
        sock.settimeout(5)
        while got["bytes"] < expected:
            try:
                data = sock.recv(262144)
            except socket.timeout:
                break
            if not data:
                break
            got["bytes"] += len(data)
            got["at"] = time.monotonic()

    reader = threading.Thread(target=read)
    reader.start()
    pub = Client(args.host, args.port, v5=False, timeout=30)
    pub.connect("qos0-stream-pub")
    started = time.monotonic()
    pub.send(packet * args.count)
    reader.join()
    pub.disconnect()
    sub.close()
    seconds = max(got["at"] - started, 1e-9)
    received = got["bytes"] // len(packet)
    print(json.dumps({"received": received, "seconds": round(seconds, 3),
                      "rate": round(received / seconds)}))


if __name__ == "__main__":
    main()
