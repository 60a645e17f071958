#!/usr/bin/env python3
"""Topic administration through librdkafka (confluent-kafka AdminClient), for tests.

  kafka_admin.py --bootstrap B delete --topic T
Deletes T and waits until the broker no longer lists it (exit 0), or fails after 20 s.
"""
import argparse
import sys
import time

from confluent_kafka.admin import AdminClient


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    sub = ap.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("delete")
    d.add_argument("--topic", required=True)
    args = ap.parse_args()

    admin = AdminClient({"bootstrap.servers": args.bootstrap})
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
