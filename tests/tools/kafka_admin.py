#!/usr/bin/env python3
"""Topic administration through librdkafka (confluent-kafka AdminClient), for tests.

  kafka_admin.py --bootstrap B delete --topic T
Deletes T and waits until the broker no longer lists it (exit 0), or fails after 20 s.
  kafka_admin.py --bootstrap B create --topic T --partitions N
Creates T with N partitions (exit 0 also if it already exists with N partitions).
"""
import argparse
import sys
import time

from confluent_kafka.admin import AdminClient, NewTopic


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    sub = ap.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("delete")
    d.add_argument("--topic", required=True)
    c = sub.add_parser("create")
    c.add_argument("--topic", required=True)
    c.add_argument("--partitions", type=int, required=True)
    args = ap.parse_args()

    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    if args.mode == "create":
        futures = admin.create_topics([NewTopic(args.topic, args.partitions, 1)], operation_timeout=10)
        try:
            futures[args.topic].result(timeout=20)
        except Exception as e:  # already exists is fine if the count matches
            print(f"create {args.topic}: {e}", file=sys.stderr)
        meta = admin.list_topics(args.topic, timeout=10).topics.get(args.topic)
        n = len(meta.partitions) if meta and meta.partitions else 0
        if n != args.partitions:
            print(f"{args.topic} has {n} partitions, wanted {args.partitions}", file=sys.stderr)
            return 1
        return 0
    futures = admin.delete_topics([args.topic], operation_timeout=10)
    futures[args.topic].result(timeout=20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if args.topic not in admin.list_topics(timeout=5).topics:
            return 0
        time.sleep(0.1)
    print(f"{args.topic} still listed 20 s after delete", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
