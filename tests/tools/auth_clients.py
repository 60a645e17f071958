"""Real clients for the authentication and permission tests (tests/tests/auth.rs).

    auth_clients.py mqtt HOST PORT JSON   raw MQTT (mqtt_raw.Client): exact CONNACK/SUBACK/PUBACK codes
    auth_clients.py paho HOST PORT JSON   paho-mqtt: connect and report the reason code
    auth_clients.py nats URL JSON         nats-py: connect, publish, subscribe, report -ERRs

JSON holds the credentials and a list of steps; the observations are printed as one JSON line.
Steps: {"pub": TOPIC, "qos": N} (MQTT: the PUBACK/PUBREC code, or null for QoS 0),
{"sub": FILTER} (MQTT: the SUBACK code), {"recv": SECONDS} (the topics received meanwhile),
{"sleep": SECONDS}.
"""
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mqtt_raw  # noqa: E402


def mqtt(host, port, spec):
    c = mqtt_raw.Client(host, int(port), spec.get("v5", True))
    started = time.monotonic()
    try:
        ack = c.connect(spec.get("client_id", ""), clean=spec.get("clean", True),
                        username=spec.get("user"), password=spec.get("password"),
                        props_=spec.get("props"), expect_ok=False,
                        will=spec.get("will"))
    except mqtt_raw.Closed:
        return {"connack": None, "closed": True, "seconds": time.monotonic() - started}
    out = {"connack": ack["rc"], "session_present": ack.get("session_present"),
           "seconds": time.monotonic() - started, "results": []}
    if ack["rc"] != 0:
        return out
    for step in spec.get("steps", []):
        if "pub" in step:
            qos = step.get("qos", 0)
            pid = c.publish(step["pub"], step.get("payload", "x"), qos=qos)
            if qos == 0:
                out["results"].append(None)
                continue
            reply = c.recv()
            out["results"].append(reply.get("rc", 0))
            if qos == 2 and reply.get("rc", 0) < 0x80:
                c.ack(mqtt_raw.PUBREL, pid)
                c.recv()  # PUBCOMP
        elif "sub" in step:
            codes = c.subscribe((step["sub"], step.get("qos", 1)))
            out["results"].append(codes[0])
        elif "recv" in step:
            msgs = c.messages(step["recv"])
            out["results"].append(sorted(m["topic"] for m in msgs))
        elif "sleep" in step:
            time.sleep(step["sleep"])
    c.disconnect()
    return out


def paho(host, port, spec):
    import paho.mqtt.client as pm
    v5 = spec.get("v5", True)
    client = pm.Client(pm.CallbackAPIVersion.VERSION2, client_id=spec.get("client_id", ""),
                       protocol=pm.MQTTv5 if v5 else pm.MQTTv311)
    if spec.get("user") is not None:
        client.username_pw_set(spec["user"], spec.get("password"))
    result = {}

    def on_connect(_c, _u, _f, reason, _p):
        result["rc"] = reason.value if hasattr(reason, "value") else int(reason)

    client.on_connect = on_connect
    client.connect(host, int(port))
    deadline = time.monotonic() + 10
    while "rc" not in result and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    client.disconnect()
    return result


async def nats_run(url, spec):
    import nats
    errors = []

    async def on_error(e):
        errors.append(str(e))

    kw = {"allow_reconnect": False, "max_reconnect_attempts": 0, "connect_timeout": 5,
          "error_cb": on_error, "name": spec.get("name", "auth-test")}
    for key in ("user", "password", "token"):
        if spec.get(key) is not None:
            kw[key] = spec[key]
    out = {"connected": False, "errors": errors, "results": []}
    try:
        nc = await nats.connect(url, **kw)
    except Exception as e:  # noqa: BLE001 - the error text is the observation
        out["connect_error"] = f"{type(e).__name__}: {e}"
        return out
    out["connected"] = True
    received = []

    async def on_msg(msg):
        received.append(msg.subject)

    for step in spec.get("steps", []):
        if "pub" in step:
            await nc.publish(step["pub"], step.get("payload", "x").encode())
            await nc.flush()
            out["results"].append(None)
        elif "sub" in step:
            await nc.subscribe(step["sub"], cb=on_msg)
            await nc.flush()
            out["results"].append(None)
        elif "recv" in step:
            await asyncio.sleep(step["recv"])
            out["results"].append(sorted(received))
            received.clear()
        elif "sleep" in step:
            await asyncio.sleep(step["sleep"])
    await asyncio.sleep(0.2)
    try:
        await nc.close()
    except Exception:  # noqa: BLE001
        pass
    return out


def main():
    kind = sys.argv[1]
    if kind == "mqtt":
        out = mqtt(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    elif kind == "paho":
        out = paho(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    elif kind == "nats":
        out = asyncio.run(nats_run(sys.argv[2], json.loads(sys.argv[3])))
    else:
        raise SystemExit(f"unknown kind {kind}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
