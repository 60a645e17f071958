#!/usr/bin/env python3
"""NATS sensor simulator: devices publish readings with JetStream-style durable acks.

edge-broker speaks the NATS client protocol. `js.publish()` sends each message with a reply
subject and waits for the PubAck `{"stream": ..., "seq": N}`, which edge-broker sends only once
the event is in its durable log. The `Nats-Msg-Id` header lets the broker drop a duplicate when
a publish is retried after a lost ack.

    pip install nats-py              # or: pip install -r examples/requirements.txt
    python3 examples/nats_sensors.py --devices 10 --rate 2
    python3 examples/nats_sensors.py --server nats://127.0.0.1:4222 --count 50

Subjects are `sensors.<device>.<kind>`; route them with `[[route]] nats = "sensors.>"`.
"""
import argparse
import asyncio
import json
import random
import signal
import time

import nats
from nats.errors import TimeoutError as NatsTimeout

KINDS = ("temperature", "humidity")


async def device(js, n, args, stats, stop):
    name = f"dev-{n:03d}"
    kind = KINDS[n % len(KINDS)]
    seq = 0
    while not stop.is_set() and (args.count == 0 or seq < args.count):
        payload = json.dumps({"device": name, "seq": seq, "value": round(random.uniform(15, 30), 2), "ts": time.time()})
        try:
            ack = await js.publish(
                f"{args.prefix}.{name}.{kind}",
                payload.encode(),
                timeout=5,
                headers={"Nats-Msg-Id": f"{name}-{seq}", "site": "demo"},
            )
            stats["acked"] += 1
            stats["last_seq"] = ack.seq  # the stream sequence the broker gave the event
        except NatsTimeout:
            stats["timeouts"] += 1  # not acknowledged: the same Msg-Id is retried below
            continue
        seq += 1
        try:
            await asyncio.wait_for(stop.wait(), 1.0 / args.rate)
        except asyncio.TimeoutError:
            pass


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="nats://127.0.0.1:4222")
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--rate", type=float, default=1.0, help="messages per second per device")
    ap.add_argument("--count", type=int, default=0, help="messages per device, 0 = forever")
    ap.add_argument("--prefix", default="sensors")
    args = ap.parse_args()

    nc = await nats.connect(args.server, name="nats-sensors")
    js = nc.jetstream()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    stats = {"acked": 0, "timeouts": 0, "last_seq": None}

    async def report():
        while not stop.is_set():
            await asyncio.sleep(1)
            print(f"nats_sensors: acked {stats['acked']} (last seq {stats['last_seq']}), timeouts {stats['timeouts']}", flush=True)

    reporter = asyncio.create_task(report())
    await asyncio.gather(*(device(js, n, args, stats, stop) for n in range(args.devices)))
    reporter.cancel()
    try:
        await nc.drain()  # flush what is pending, then close
    except Exception as err:  # the broker may be going away at the same time
        print(f"nats_sensors: drain: {err!r}", flush=True)
    print(f"nats_sensors: done: acked {stats['acked']}, timeouts {stats['timeouts']}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
