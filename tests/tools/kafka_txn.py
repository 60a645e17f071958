#!/usr/bin/env python3
"""librdkafka's transactional producer (confluent-kafka) against a Kafka-compatible broker: the
minimal reproductions behind bridge/README.md's "What Tansu 0.6 supports of transactions".

Modes (each prints one JSON object):
  txn        One transaction of transactional.id --id: --values (comma-separated) produced to
             --topic/--partition and flushed, optionally the offset --offset of group --group
             for --topic/--partition sent to the transaction (TxnOffsetCommit), then ended by
             --end commit | abort | crash (exit without ending it, as a gateway that dies).
             {"ok": true} or {"error": NAME, "fatal": bool}.
  fence      Two producers with one transactional.id: A commits "A-1"; B initialises (fencing
             A); A tries to commit "A-2"; B commits "B-1". {"a_error": NAME, "a_fatal": bool}.
  committed  The offset group --group committed for --topic/--partition: {"offset": N}.
Usage:
  kafka_txn.py --bootstrap B txn --id X --topic T --values a,b --end commit [--timeout-ms 60000]
  kafka_txn.py --bootstrap B fence --id X --topic T
  kafka_txn.py --bootstrap B committed --group G --topic T
"""
import argparse
import json
import os
import sys

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def producer(args, txn_id, timeout_ms=60000):
    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "transactional.id": txn_id,
        "transaction.timeout.ms": timeout_ms,
        "linger.ms": 0,
    })
    p.init_transactions(30)
    return p


def error(e):
    err = e.args[0]
    return {"error": err.name(), "fatal": err.fatal()}


def txn(args):
    p = producer(args, args.id, args.timeout_ms)
    try:
        p.begin_transaction()
        for v in args.values.split(","):
            p.produce(args.topic, v.encode(), partition=args.partition)
        p.flush(30)
        if args.group:
            c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group})
            p.send_offsets_to_transaction(
                [TopicPartition(args.topic, args.partition, args.offset)],
                c.consumer_group_metadata(), 30)
        if args.end == "crash":
            print(json.dumps({"ok": True}), flush=True)
            os._exit(0)
        if args.end == "commit":
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
    except KafkaException as e:
        return error(e)
    return {"ok": True}


def fence(args):
    a = producer(args, args.id)
    a.begin_transaction()
    a.produce(args.topic, b"A-1", partition=0)
    a.commit_transaction(30)
    b = producer(args, args.id)
    out = {}
    try:
        a.begin_transaction()
        a.produce(args.topic, b"A-2", partition=0)
        a.flush(30)
        a.commit_transaction(30)
        out = {"a_error": None, "a_fatal": False}
    except KafkaException as e:
        out = {"a_error": e.args[0].name(), "a_fatal": e.args[0].fatal()}
    b.begin_transaction()
    b.produce(args.topic, b"B-1", partition=0)
    b.commit_transaction(30)
    return out


def committed(args):
    c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group,
                  "isolation.level": "read_committed"})
    [tp] = c.committed([TopicPartition(args.topic, args.partition)], timeout=30)
    c.close()
    return {"offset": tp.offset}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    sub = ap.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("txn")
    t.add_argument("--id", required=True)
    t.add_argument("--topic", required=True)
    t.add_argument("--partition", type=int, default=0)
    t.add_argument("--values", required=True)
    t.add_argument("--end", choices=["commit", "abort", "crash"], required=True)
    t.add_argument("--timeout-ms", type=int, default=60000)
    t.add_argument("--group")
    t.add_argument("--offset", type=int, default=0)
    f = sub.add_parser("fence")
    f.add_argument("--id", required=True)
    f.add_argument("--topic", required=True)
    c = sub.add_parser("committed")
    c.add_argument("--group", required=True)
    c.add_argument("--topic", required=True)
    c.add_argument("--partition", type=int, default=0)
    args = ap.parse_args()
    out = {"txn": txn, "fence": fence, "committed": committed}[args.mode](args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
