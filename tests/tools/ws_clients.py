"""paho-mqtt over WebSockets (its own `websockets` transport) for tests/tests/mqtt_websockets.rs
and the `$SYS` tests.

    ws_clients.py HOST PORT JSON

JSON: {"transport": "websockets"|"tcp" (default websockets), "path": "/mqtt", "ca": FILE (wss),
"v5": true, "user", "password", "client_id", "steps": [...]}. Steps: {"sub": FILTER, "qos": N}
(the granted QoS or reason code), {"pub": TOPIC, "payload": TEXT, "qos": N} (QoS 1/2: waits for
the acknowledgement; the result is its reason code, 0 for success), {"recv": SECONDS} (the
messages received so far and meanwhile: [{"topic", "payload", "retain"}]), {"sleep": SECONDS}.
Prints one JSON line: {"rc": CONNACK reason or null, "error": text, "results": [...]}.
"""
import json
import sys
import threading
import time

import paho.mqtt.client as pm


def run(host, port, spec):
    transport = spec.get("transport", "websockets")
    v5 = spec.get("v5", True)
    client = pm.Client(pm.CallbackAPIVersion.VERSION2, client_id=spec.get("client_id", ""),
                       protocol=pm.MQTTv5 if v5 else pm.MQTTv311, transport=transport)
    if transport == "websockets":
        client.ws_set_options(path=spec.get("path", "/mqtt"))
    if spec.get("ca"):
        client.tls_set(ca_certs=spec["ca"])
    if spec.get("user") is not None:
        client.username_pw_set(spec["user"], spec.get("password"))
    out = {"rc": None, "results": []}
    connected = threading.Event()
    lock = threading.Lock()
    received = []
    acks = {}
    granted = {}

    def on_connect(_c, _u, _f, reason, _p):
        out["rc"] = reason.value if hasattr(reason, "value") else int(reason)
        connected.set()

    def on_message(_c, _u, msg):
        with lock:
            received.append({"topic": msg.topic, "payload": msg.payload.decode("utf-8", "replace"),
                             "retain": bool(msg.retain)})

    def on_publish(_c, _u, mid, reason, _p):
        with lock:
            acks[mid] = reason.value if hasattr(reason, "value") else int(reason)

    def on_subscribe(_c, _u, mid, reasons, _p):
        with lock:
            granted[mid] = [r.value if hasattr(r, "value") else int(r) for r in reasons]

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_publish = on_publish
    client.on_subscribe = on_subscribe
    try:
        client.connect(host, int(port), keepalive=30)
    except Exception as e:  # noqa: BLE001 - the error is the observation
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    client.loop_start()
    try:
        if not connected.wait(10):
            out["error"] = "no CONNACK within 10 s"
            return out
        if out["rc"] != 0:
            return out

        def wait_for(table, mid):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with lock:
                    if mid in table:
                        return table.pop(mid)
                time.sleep(0.01)
            return None

        for step in spec.get("steps", []):
            if "sub" in step:
                _, mid = client.subscribe(step["sub"], qos=step.get("qos", 1))
                codes = wait_for(granted, mid)
                out["results"].append(codes[0] if codes else None)
            elif "pub" in step:
                qos = step.get("qos", 0)
                info = client.publish(step["pub"], step.get("payload", "x"), qos=qos)
                if qos == 0:
                    info.wait_for_publish(10)
                    out["results"].append(None)
                else:
                    out["results"].append(wait_for(acks, info.mid))
            elif "recv" in step:
                time.sleep(step["recv"])
                with lock:
                    out["results"].append(list(received))
                    received.clear()
            elif "sleep" in step:
                time.sleep(step["sleep"])
        client.disconnect()
    finally:
        client.loop_stop()
    return out


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))), flush=True)
