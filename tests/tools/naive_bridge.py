#!/usr/bin/env python3
"""The naive MQTT -> Kafka pipeline a user might write: a paho subscriber (QoS 1) whose
on_message hands every message to a confluent-kafka producer (acks=all, key = topic level 2).

Usage: naive_bridge.py --mqtt HOST:PORT --bootstrap B --topic T --expect N [--timeout 300]
       [--compression lz4]
Prints "READY" once subscribed, then a JSON line {"records": N, "first": t0, "last": t1}
(time.time() of the first message received and of the last delivery report) after N
deliveries, exit 0; exit 2 on timeout.
"""
import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from confluent_kafka import Producer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mqtt", required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--compression", default="lz4")
    args = ap.parse_args()

    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all",
                         "linger.ms": 5, "compression.type": args.compression})
    delivered = 0
    first = None
    last = None
    done = threading.Event()

    def report(err, _msg):
        nonlocal delivered, last
        if err is None:
            delivered += 1
            last = time.time()
            if delivered >= args.expect:
                done.set()

    def on_message(_c, _u, msg):
        nonlocal first
        if first is None:
            first = time.time()
        key = msg.topic.split("/")[1] if msg.topic.count("/") >= 1 else None
        while True:
            try:
                producer.produce(args.topic, msg.payload, key=key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)

    host, port = args.mqtt.rsplit(":", 1)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="naive-bridge")
    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(host, int(port))
    client.subscribe("sensors/+/t", qos=1)
    client.loop_start()
    subscribed.wait(10)
    print("READY", flush=True)
    deadline = time.monotonic() + args.timeout
    while not done.is_set() and time.monotonic() < deadline:
        producer.poll(0.05)
    client.loop_stop()
    producer.flush(30)
    print(json.dumps({"records": delivered, "first": first, "last": last}), flush=True)
    return 0 if done.is_set() else 2


if __name__ == "__main__":
    sys.exit(main())
