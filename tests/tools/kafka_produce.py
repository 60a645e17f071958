#!/usr/bin/env python3
"""librdkafka (confluent-kafka) as a reference producer for edge-broker's tests and benchmarks.

Modes:
  keys   Produce one record per --keys entry with librdkafka's `murmur2_random` partitioner
         (the Java client's default for keyed records) and print {"key": partition, ...} from
         the delivery reports: an independent check of our murmur2 partitioner.
  bench  Produce --records records of --size bytes spread evenly over the topic's partitions
         with produce_batch() (--batch records per call and per librdkafka batch), acks=all,
         --compression (none by default), and print
         {"records": N, "seconds": S, "rate": R} measured from the first produce() until
         flush() returns: the ceiling our producer is compared with. --like-edge gives every
         record a key and the four edge-* headers, shaped like what edge-broker forwards.
         --txn-every N makes it a transactional producer committing every N records.
  once   Produce --records records (values "once-<i>") one at a time to partition 0 with
         librdkafka's retries off (message.send.max.retries=0) and a --timeout-ms request
         timeout, and print {"errors": [name or null per record], "throttle_ms": T,
         "seconds": [s per record], "broker_errors": [...]}: what librdkafka itself reports
         for a fault injected by the test proxy (tests/src/kafka_proxy.rs). T is the largest
         throttle librdkafka saw; broker_errors are the broker error texts in librdkafka's
         own log ("Not leader for partition", ...), which also names errors it retries by
         itself whatever the retry setting (a leader change).
Usage:
  kafka_produce.py --bootstrap B --topic T keys --keys a,b,c
  kafka_produce.py --bootstrap B --topic T once --records 3 --timeout-ms 5000
  kafka_produce.py --bootstrap B --topic T bench --records 100000 --size 200 --batch 1000
"""
import argparse
import json
import random
import sys
import time

from confluent_kafka import Producer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    sub = ap.add_subparsers(dest="mode", required=True)
    k = sub.add_parser("keys")
    k.add_argument("--keys", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--records", type=int, default=100000)
    b.add_argument("--size", type=int, default=200)
    b.add_argument("--batch", type=int, default=1000)
    b.add_argument("--compression", default="none")
    b.add_argument("--like-edge", action="store_true",
                   help="records shaped like edge-broker's: a key and the four edge-* headers")
    b.add_argument("--idempotent", action="store_true",
                   help="enable.idempotence (max 5 requests in flight), like edge-broker's producer")
    b.add_argument("--txn-every", type=int, default=0,
                   help="transactional: commit a transaction every N records (0: no transactions)")
    o = sub.add_parser("once")
    o.add_argument("--records", type=int, default=1)
    o.add_argument("--timeout-ms", type=int, default=5000)
    args = ap.parse_args()

    errors = []

    if args.mode == "once":
        return once(args)

    if args.mode == "keys":
        p = Producer({"bootstrap.servers": args.bootstrap, "partitioner": "murmur2_random", "acks": "all"})
        placed = {}

        def report(err, msg):
            if err is not None:
                errors.append(str(err))
            else:
                placed[msg.key().decode()] = msg.partition()

        for key in args.keys.split(","):
            p.produce(args.topic, key=key.encode(), value=b"x", on_delivery=report)
        p.flush(30)
        if errors or len(placed) != len(set(args.keys.split(","))):
            print(f"delivery failed: {errors}", file=sys.stderr)
            return 1
        print(json.dumps(placed))
        return 0

    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "compression.type": args.compression,
        "batch.num.messages": args.batch,
        "batch.size": max(1_000_000, args.batch * (args.size + 100)),
        "linger.ms": 5,
        "queue.buffering.max.messages": max(100_000, args.records),
        "queue.buffering.max.kbytes": 1_048_576,
        # Delivery reports only for failures: no per-record Python callback on the hot path.
        "delivery.report.only.error": True,
        "enable.idempotence": args.idempotent or args.txn_every > 0,
        **({"transactional.id": f"bench-{random.getrandbits(32)}"} if args.txn_every else {}),
    })
    if args.txn_every:
        p.init_transactions(30)
    partitions = sorted(p.list_topics(args.topic, timeout=10).topics[args.topic].partitions)
    # 1024 distinct values of random hex (about 2:1 compressible, like sensor JSON), built
    # before the clock starts so Python's own work is not timed.
    rng = random.Random(42)
    pool = [rng.getrandbits(args.size * 4).to_bytes(args.size // 2, "big").hex().encode()[: args.size]
            for _ in range(1024)]
    per_partition = args.records // len(partitions)

    def record(part, i):
        msg = {"value": pool[i % 1024]}
        if args.like_edge:
            # What edge-broker forwards for sensors/<prefix>c<n>-<k>/t with key {topic.2}.
            sensor = f"p{part}c0-{i % 16}"
            msg["key"] = sensor.encode()
            msg["headers"] = [("edge-node", b"bench-gw"),
                              ("edge-offset", str(part * per_partition + i).encode()),
                              ("edge-source", b"mqtt"),
                              ("edge-topic", f"sensors/{sensor}/t".encode())]
        return msg
    lanes = []
    for part in partitions:
        lane = []
        for first in range(0, per_partition, args.batch):
            n = min(args.batch, per_partition - first)
            lane.append((part, [record(part, first + i) for i in range(n)]))
        lanes.append(lane)
    # Interleave partitions like concurrent per-partition senders would.
    batches = [b for group in zip(*lanes) for b in group]
    total = sum(len(m) for _, m in batches)

    def report(err, msg):
        errors.append(str(err))

    start = time.perf_counter()
    in_txn = 0
    transactions = 0
    for part, msgs in batches:
        if args.txn_every and in_txn == 0:
            p.begin_transaction()
        while True:
            try:
                queued = p.produce_batch(args.topic, msgs, partition=part, on_delivery=report)
                if queued != len(msgs):
                    errors.append(f"queued {queued} of {len(msgs)}")
                break
            except BufferError:
                p.poll(0.01)
        if args.txn_every:
            in_txn += len(msgs)
            if in_txn >= args.txn_every:
                p.commit_transaction(60)
                transactions += 1
                in_txn = 0
    if args.txn_every and in_txn:
        p.commit_transaction(60)
        transactions += 1
    remaining = p.flush(120)
    seconds = time.perf_counter() - start
    if errors or remaining:
        print(f"{remaining} undelivered; errors: {errors[:5]}", file=sys.stderr)
        return 1
    print(json.dumps({"records": total, "seconds": seconds, "rate": total / seconds,
                      "transactions": transactions}))
    return 0


def once(args):
    import logging
    import re

    throttled = [0]
    broker_errors = []

    class Collect(logging.Handler):
        def emit(self, record):
            for m in re.finditer(r"Broker: ([A-Za-z][A-Za-z ]+)", record.getMessage()):
                if m.group(1) not in broker_errors:
                    broker_errors.append(m.group(1))

    log = logging.getLogger("librdkafka")
    log.addHandler(Collect())
    log.setLevel(logging.DEBUG)

    def throttle(event):
        throttled[0] = max(throttled[0], int(event.throttle_time * 1000))

    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "linger.ms": 0,
        "message.send.max.retries": 0,
        "enable.idempotence": False,
        "request.timeout.ms": args.timeout_ms,
        "message.timeout.ms": args.timeout_ms * 3,
        "throttle_cb": throttle,
        "debug": "msg",
    }, logger=log)
    out = {"errors": [], "seconds": []}
    for i in range(args.records):
        result = []

        def report(err, msg):
            result.append(None if err is None else err.name())

        start = time.perf_counter()
        p.produce(args.topic, value=f"once-{i}".encode(), partition=0, on_delivery=report)
        p.flush(args.timeout_ms * 4 / 1000)
        out["seconds"].append(time.perf_counter() - start)
        out["errors"].append(result[0] if result else "NO_DELIVERY_REPORT")
    # Throttle callbacks are served by poll(): give the last one a moment.
    p.poll(0.5)
    out["throttle_ms"] = throttled[0]
    out["broker_errors"] = broker_errors
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
