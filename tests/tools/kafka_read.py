#!/usr/bin/env python3
"""Independent Kafka reader for edge-broker's end-to-end tests (librdkafka via confluent-kafka).

Reads every partition of one topic from the beginning with Consumer.assign() (no consumer
group: Tansu is slow to hand out group assignments) and prints one JSON object per record:
{"partition": P, "offset": O, "key": str|null, "value": str|null, "headers": [[k, v], ...]}
Keys, values and header values are decoded as UTF-8 with U+FFFD for bad bytes.

Stops once --expect records were read and every partition reached its end, or at --timeout
(exit status 2, with what was read so far printed). Usage:
  kafka_read.py --bootstrap 127.0.0.1:9092 --topic T --expect N [--timeout 30] [--ssl-ca CA]
                [--sasl MECHANISM:USER:PASSWORD]
                [--isolation read_committed|read_uncommitted]
librdkafka's default isolation is read_committed: records of open transactions are held back
(up to the last stable offset) and, on a broker that reports them, aborted ones are skipped.
"""
import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition, OFFSET_BEGINNING


def text(b):
    return None if b is None else b.decode("utf-8", errors="replace")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--ssl-ca", help="connect over TLS, trusting this CA file")
    ap.add_argument("--sasl", help="MECHANISM:USER:PASSWORD (SASL_PLAINTEXT)")
    ap.add_argument("--isolation", default="read_committed",
                    choices=["read_committed", "read_uncommitted"])
    args = ap.parse_args()
    tls = {"security.protocol": "SSL", "ssl.ca.location": args.ssl_ca} if args.ssl_ca else {}
    if args.sasl:
        mechanism, user, password = args.sasl.split(":", 2)
        tls = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism,
               "sasl.username": user, "sasl.password": password}

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "edge-tests-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "isolation.level": args.isolation,
        **tls,
    })
    deadline = time.monotonic() + args.timeout
    meta = consumer.list_topics(args.topic, timeout=max(1.0, deadline - time.monotonic()))
    topic = meta.topics.get(args.topic)
    if topic is None or topic.error is not None or not topic.partitions:
        print(f"topic {args.topic} not found: {topic and topic.error}", file=sys.stderr)
        return 1
    partitions = sorted(topic.partitions)
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in partitions])

    read = 0
    at_end = set()
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
                if read >= args.expect and len(at_end) == len(partitions):
                    break
                continue
            print(f"consume error: {msg.error()}", file=sys.stderr)
            return 1
        at_end.discard(msg.partition())
        read += 1
        print(json.dumps({
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": text(msg.key()),
            "value": text(msg.value()),
            "headers": [[k, text(v)] for k, v in (msg.headers() or [])],
        }), flush=True)
    else:
        print(f"timeout after {args.timeout}s: read {read} of {args.expect}", file=sys.stderr)
        consumer.close()
        return 2
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
