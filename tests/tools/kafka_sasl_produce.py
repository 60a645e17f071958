#!/usr/bin/env python3
"""librdkafka (confluent-kafka) producing one record over SASL_PLAINTEXT: the independent
client that checks the test-only SASL proxy (tests/tools/sasl_proxy.py) before edge-broker is
tested against it. Prints {"ok": bool, "offset": N|null, "error": str|null}.

  kafka_sasl_produce.py --bootstrap B --topic T --mechanism SCRAM-SHA-256 --user U --password P
  kafka_sasl_produce.py --bootstrap B --topic T --mechanism OAUTHBEARER --token TOKEN
"""
import argparse
import json
import time

from confluent_kafka import Producer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--mechanism", required=True)
    ap.add_argument("--user", default="")
    ap.add_argument("--password", default="")
    ap.add_argument("--token")
    args = ap.parse_args()
    errors = []
    config = {
        "bootstrap.servers": args.bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": args.mechanism,
        "message.timeout.ms": 8000,
        "error_cb": lambda e: errors.append(str(e)),
    }
    if args.mechanism == "OAUTHBEARER":
        token = args.token
        config["oauth_cb"] = lambda _cfg: (token, time.time() + 3600)
    else:
        config["sasl.username"] = args.user
        config["sasl.password"] = args.password
    producer = Producer(config)
    result = {}

    def report(err, msg):
        result["error"] = None if err is None else str(err)
        result["offset"] = None if err is not None else msg.offset()

    producer.produce(args.topic, b"librdkafka-through-the-proxy", on_delivery=report)
    producer.flush(12)
    ok = result.get("error") is None and result.get("offset") is not None
    print(json.dumps({"ok": ok, "offset": result.get("offset"),
                      "error": result.get("error") or (errors[0] if errors else None)}))


if __name__ == "__main__":
    main()
