"""Publish numbered QoS 1/2 messages with paho-mqtt and print each one the broker acknowledged.

Usage: mqtt_pub_acked.py HOST PORT TOPIC COUNT [--qos 1] [--version 5|311] [--inflight 50]
       [--keys K] [--user-property NAME=VALUE] [--size BYTES] [--rate PER_SECOND] [--first N]

With --keys K, "{k}" in TOPIC is replaced by n % K (spreads messages over K keys). With
--user-property (MQTT 5 only) every publish carries that user property. --size pads payloads
to BYTES with '.' (for benchmarks). --rate publishes at most that many messages per second
(a steady stream, like sensors; default: as fast as the window allows). --first numbers the
messages from N (several publishers, one after another, without overlapping numbers).

Prints "ACK <n>" (flushed) for every PUBACK/PUBCOMP received, "DONE" when all are acked;
exits when the broker goes away. Payloads are "msg-<n>".
"""
import argparse
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("topic")
    ap.add_argument("count", type=int)
    ap.add_argument("--qos", type=int, default=1)
    ap.add_argument("--version", default="5")
    ap.add_argument("--inflight", type=int, default=50)
    ap.add_argument("--client-id", default="acked-publisher")
    ap.add_argument("--keys", type=int, default=1)
    ap.add_argument("--user-property", action="append", default=[])
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--rate", type=float, default=0)
    ap.add_argument("--first", type=int, default=0,
                    help="number of the first message (msg-<first> .. msg-<first+count-1>)")
    args = ap.parse_args()

    protocol = mqtt.MQTTv5 if args.version == "5" else mqtt.MQTTv311
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=protocol)
    client.max_inflight_messages_set(args.inflight)
    mid_to_n = {}
    lock = threading.Lock()
    acked = 0
    gone = threading.Event()
    done = threading.Event()

    early = {}  # mid -> failed?, for acks that arrive before publish() returned the mid

    # At most `inflight` unacknowledged publishes: packet ids (1..65535) are then unambiguous.
    window = threading.Semaphore(args.inflight)

    def report(n, failed):
        nonlocal acked
        window.release()
        if failed:
            return
        print(f"ACK {n}", flush=True)
        acked += 1
        if acked == args.count:
            done.set()

    # paho calls on_publish while holding its own lock: never call paho while holding ours.
    def on_publish(_client, _userdata, mid, reason_code, _properties):
        failed = hasattr(reason_code, "is_failure") and reason_code.is_failure
        with lock:
            n = mid_to_n.pop(mid, None)
            if n is None:
                early[mid] = failed
                return
            report(n, failed)

    def on_disconnect(_client, _userdata, _flags, _reason_code, _properties):
        gone.set()

    properties = None
    if args.user_property and protocol == mqtt.MQTTv5:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = [tuple(p.split("=", 1)) for p in args.user_property]

    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    start = time.monotonic()
    for n in range(args.first, args.first + args.count):
        if args.rate > 0:
            due = start + (n - args.first) / args.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
        while not window.acquire(timeout=0.1):
            if gone.is_set():
                break
        if gone.is_set():
            break
        payload = f"msg-{n}".encode()
        if len(payload) < args.size:
            payload += b"." * (args.size - len(payload))
        topic = args.topic.replace("{k}", str(n % args.keys))
        info = client.publish(topic, payload, qos=args.qos, properties=properties)
        with lock:
            if info.mid in early:
                report(n, early.pop(info.mid))
            else:
                mid_to_n[info.mid] = n
    while not (done.is_set() or gone.is_set()):
        done.wait(0.1)
    if done.is_set():
        print("DONE", flush=True)
        client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
