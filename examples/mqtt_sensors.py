#!/usr/bin/env python3
"""MQTT sensor simulator: many devices publishing readings to edge-broker.

Each device is its own MQTT connection (client id `sim-<n>`) and publishes a small JSON reading
to `sensors/<device>/<kind>` every 1/RATE seconds. With QoS 1 or 2 the broker acknowledges a
message only after it is in its durable log, so "acked" below counts events that are safe.

    pip install paho-mqtt            # or: pip install -r examples/requirements.txt
    python3 examples/mqtt_sensors.py --devices 20 --rate 2 --qos 1
    python3 examples/mqtt_sensors.py --port 1883 --devices 5 --count 100 --mqtt5

Prints a line per second (sent / acked so far); stops after --count messages per device or
on Ctrl-C, then disconnects cleanly.
"""
import argparse
import json
import random
import signal
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

KINDS = ("temperature", "humidity")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--devices", type=int, default=10, help="simulated devices (connections)")
    ap.add_argument("--rate", type=float, default=1.0, help="messages per second per device")
    ap.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    ap.add_argument("--count", type=int, default=0, help="messages per device, 0 = forever")
    ap.add_argument("--mqtt5", action="store_true", help="MQTT 5 (adds a user property)")
    ap.add_argument("--prefix", default="sensors", help="first topic level")
    args = ap.parse_args()

    acked = 0
    lock = threading.Lock()

    def on_publish(client, userdata, mid, reason_code, properties):
        # QoS 1: PUBACK arrived; QoS 2: PUBCOMP arrived. Either way the event is in the log.
        nonlocal acked
        with lock:
            acked += 1

    protocol = mqtt.MQTTv5 if args.mqtt5 else mqtt.MQTTv311
    clients = []
    for n in range(args.devices):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{n}", protocol=protocol)
        c.on_publish = on_publish
        c.connect(args.host, args.port, keepalive=30)
        c.loop_start()  # one network thread per device: fine for tens of devices
        clients.append(c)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    sent = 0
    period = 1.0 / args.rate
    next_at = time.monotonic()
    last_report = next_at
    round_no = 0
    while not stop.is_set() and (args.count == 0 or round_no < args.count):
        for n, c in enumerate(clients):
            kind = KINDS[n % len(KINDS)]
            device = f"dev-{n:03d}"
            value = 21.0 + random.uniform(-2, 2) if kind == "temperature" else random.uniform(30, 60)
            payload = json.dumps({"device": device, "seq": round_no, "value": round(value, 2), "ts": time.time()})
            props = None
            if args.mqtt5:
                # MQTT 5 user properties travel with the event (they become Kafka headers)
                props = Properties(PacketTypes.PUBLISH)
                props.UserProperty = [("site", "demo")]
            c.publish(f"{args.prefix}/{device}/{kind}", payload, qos=args.qos, properties=props)
            sent += 1
        round_no += 1
        next_at += period
        now = time.monotonic()
        if now - last_report >= 1.0:
            print(f"mqtt_sensors: sent {sent}, acked {acked}", flush=True)
            last_report = now
        stop.wait(max(0.0, next_at - now))

    # Give the last acknowledgements a moment, then leave cleanly (no will message).
    deadline = time.monotonic() + 5
    while args.qos > 0 and acked < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    for c in clients:
        c.disconnect()
        c.loop_stop()
    print(f"mqtt_sensors: done: sent {sent}, acked {acked}", flush=True)


if __name__ == "__main__":
    main()
