#!/usr/bin/env python3
"""Kafka consumer: print what edge-broker forwarded, with its edge headers.

Every record edge-broker forwards carries headers `edge-node` (gateway id), `edge-offset`
(offset in the gateway's log), `edge-source` (mqtt or nats) and `edge-topic` (original MQTT
topic / NATS subject), plus MQTT 5 user properties / NATS headers. (edge-node, edge-offset) is
unique per event: use it to drop the duplicates that at-least-once delivery may produce.

    pip install confluent-kafka      # or: pip install -r examples/requirements.txt
    python3 examples/kafka_consumer.py --bootstrap 127.0.0.1:9092 --topic sensor-temperature

Reads every partition from the beginning (assign(), no consumer group) and runs until Ctrl-C,
or until --max records were printed. Waits for the topic to appear.
"""
import argparse
import signal
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--topic", action="append", required=True, help="repeat for several topics")
    ap.add_argument("--max", type=int, default=0, help="stop after this many records (0 = never)")
    args = ap.parse_args()

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "edge-examples",      # required by librdkafka; offsets are not committed
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    # Wait until every topic exists (edge-broker creates them on first produce).
    assignment = []
    for topic in args.topic:
        while not stop:
            meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
            if meta is not None and meta.error is None and meta.partitions:
                assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
                break
            print(f"kafka_consumer: waiting for topic {topic} ...", file=sys.stderr, flush=True)
            time.sleep(1)
    consumer.assign(assignment)

    seen = set()
    printed = 0
    while not stop and (args.max == 0 or printed < args.max):
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                print(f"kafka_consumer: {msg.error()}", file=sys.stderr, flush=True)
            continue
        headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (msg.headers() or [])}
        identity = (headers.get("edge-node"), headers.get("edge-offset"))
        dup = " DUPLICATE" if identity in seen else ""
        seen.add(identity)
        key = msg.key().decode("utf-8", "replace") if msg.key() else None
        print(
            f"{msg.topic()}[{msg.partition()}]@{msg.offset()} key={key} "
            f"node={headers.get('edge-node')} offset={headers.get('edge-offset')} "
            f"source={headers.get('edge-source')} topic={headers.get('edge-topic')}{dup}\n"
            f"    {(msg.value() or b'').decode('utf-8', 'replace')}"
            + "".join(f"\n    header {k}={v}" for k, v in headers.items() if not k.startswith("edge-")),
            flush=True,
        )
        printed += 1
    consumer.close()


if __name__ == "__main__":
    main()
