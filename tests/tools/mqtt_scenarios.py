"""MQTT end-to-end scenarios, run by tests/tests/mqtt_*.rs against edge-broker or Mosquitto.

Usage: mqtt_scenarios.py SCENARIO HOST PORT [ARG...]

Each scenario talks to the broker with real clients (paho-mqtt, or the raw client of
mqtt_raw.py where a test needs exact bytes), checks what must hold on any broker, and prints
one JSON line of observations (the differential tests compare those between brokers).
A failed check exits 1 with the reason on stderr.
"""
import json
import os
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mqtt_raw as raw  # noqa: E402
from mqtt_raw import (  # noqa: E402
    CONNACK, DISCONNECT, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, Client, Closed)

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def summary(msgs):
    return sorted((m["topic"], m["payload"].decode(errors="replace"), m["qos"], m["retain"])
                  for m in msgs)


# ---- CONNECT ------------------------------------------------------------------------------
@scenario
def paho_roundtrip(host, port, version="5"):
    """paho publisher and subscriber, QoS 0/1/2 both directions, one version."""
    import paho.mqtt.client as mqtt
    proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
    got, acked = [], []
    arrived = threading.Event()

    def on_message(_c, _u, msg):
        got.append((msg.topic, msg.payload.decode(), msg.qos))
        if len(got) == 3:
            arrived.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=uniq("sub"), protocol=proto)
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(host, port, keepalive=10)
    sub.loop_start()
    sub.subscribe("rt/#", qos=2)
    check(subscribed.wait(5), "no SUBACK")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=uniq("pub"), protocol=proto)
    pub.on_publish = lambda _c, _u, mid, rc, _p: acked.append((mid, str(rc)))
    pub.connect(host, port, keepalive=10)
    pub.loop_start()
    infos = [pub.publish(f"rt/q{q}", f"m{q}", qos=q) for q in range(3)]
    for info in infos:
        info.wait_for_publish(5)
        check(info.is_published(), f"publish {info.mid} not acknowledged")
    check(arrived.wait(5), f"subscriber got {got}")
    pub.disconnect()
    sub.disconnect()
    pub.loop_stop()
    sub.loop_stop()
    check(sorted(got) == [("rt/q0", "m0", 0), ("rt/q1", "m1", 1), ("rt/q2", "m2", 2)],
          f"got {got}")
    return {"received": sorted(got)}


@scenario
def qos_flows(host, port, version="5"):
    """Raw packet flows: PUBACK / PUBREC-PUBREL-PUBCOMP both directions, same packet ids."""
    v5 = version == "5"
    sub = Client(host, port, v5)
    sub.connect(uniq("s"))
    check(sub.subscribe(("fl/#", 2)) == [2], "SUBACK QoS 2")
    pub = Client(host, port, v5)
    pub.connect(uniq("p"))
    pub.publish("fl/1", "one", qos=1, packet_id=77)
    a = pub.recv()
    check(a["type"] == PUBACK and a["packet_id"] == 77 and a["rc"] == 0, f"PUBACK 77: {a}")
    pub.publish("fl/2", "two", qos=2, packet_id=78)
    a = pub.recv()
    check(a["type"] == PUBREC and a["packet_id"] == 78, f"PUBREC 78: {a}")
    pub.ack(PUBREL, 78)
    a = pub.recv()
    check(a["type"] == PUBCOMP and a["packet_id"] == 78, f"PUBCOMP 78: {a}")
    m1 = sub.recv()
    check(m1["type"] == PUBLISH and m1["qos"] == 1 and m1["payload"] == b"one", f"{m1}")
    sub.ack(PUBACK, m1["packet_id"])
    m2 = sub.recv()
    check(m2["type"] == PUBLISH and m2["qos"] == 2 and m2["payload"] == b"two", f"{m2}")
    sub.ack(PUBREC, m2["packet_id"])
    rel = sub.recv()
    check(rel["type"] == PUBREL and rel["packet_id"] == m2["packet_id"], f"PUBREL: {rel}")
    sub.ack(PUBCOMP, m2["packet_id"])
    # A QoS 2 resend (DUP) before PUBREL is acknowledged but not delivered twice.
    pub.publish("fl/3", "three", qos=2, packet_id=79)
    check(pub.recv()["type"] == PUBREC, "PUBREC 79")
    pub.publish("fl/3", "three", qos=2, packet_id=79, dup=True)
    check(pub.recv()["type"] == PUBREC, "PUBREC 79 again")
    pub.ack(PUBREL, 79)
    check(pub.recv()["type"] == PUBCOMP, "PUBCOMP 79")
    copies = sub.messages(1.0)
    check([m["payload"] for m in copies] == [b"three"], f"QoS 2 duplicate delivered: {copies}")
    sub.ping()
    check(sub.recv()["type"] == PINGRESP, "PINGRESP")
    sub.disconnect()
    pub.disconnect()
    return {"ok": True}


@scenario
def client_ids(host, port):
    c = Client(host, port, True)
    ack = c.connect("")
    assigned = ack["props"].get("assigned_client_identifier") or ack["props"].get(
        "assigned_client_id")
    check(assigned, f"v5 empty client id: no Assigned Client Identifier in {ack}")
    c.disconnect()
    c = Client(host, port, False)
    ack = c.connect("", clean=True)
    check(ack["rc"] == 0, "v3.1.1 empty id with clean session accepted")
    c.disconnect()
    c = Client(host, port, False)
    ack = c.connect("", clean=False, expect_ok=False)
    check(ack["rc"] == 2, f"v3.1.1 empty id without clean session: CONNACK 2, got {ack}")
    c.expect_closed()
    return {"assigned": bool(assigned), "v311_refused_rc": ack["rc"]}


@scenario
def clean_session(host, port):
    cid = uniq("cs")
    c = Client(host, port, False)
    check(not c.connect(cid, clean=False)["session_present"], "fresh session not present")
    c.subscribe(("cs/t", 1))
    c.disconnect()
    p = Client(host, port, False)
    p.connect(uniq("p"))
    p.publish("cs/t", "queued", qos=1)
    check(p.recv()["type"] == PUBACK, "PUBACK")
    p.publish("cs/t", "qos0-dropped", qos=0)
    time.sleep(0.2)
    c = Client(host, port, False)
    check(c.connect(cid, clean=False)["session_present"], "session present on resume")
    got = c.messages(1.0)
    check([m["payload"] for m in got] == [b"queued"], f"offline queue (QoS 1 only): {got}")
    c.disconnect()
    c = Client(host, port, False)
    check(not c.connect(cid, clean=True)["session_present"], "clean session discards state")
    c.disconnect()
    p.publish("cs/t", "after-clean", qos=1)
    p.recv()
    c = Client(host, port, False)
    check(not c.connect(cid, clean=False)["session_present"], "no session after clean")
    check(c.messages(0.5) == [], "subscription survived a clean session")
    c.disconnect()
    p.disconnect()
    return {"ok": True}


@scenario
def session_expiry(host, port):
    cid = uniq("se")
    c = Client(host, port, True)
    c.connect(cid, clean=True, props_={"session_expiry": 1})
    c.subscribe(("se/t", 1))
    c.disconnect()
    c = Client(host, port, True)
    check(c.connect(cid, clean=False, props_={"session_expiry": 1})["session_present"],
          "session kept within its expiry")
    c.disconnect()
    time.sleep(2.5)
    c = Client(host, port, True)
    check(not c.connect(cid, clean=False)["session_present"], "session expired after 1 s")
    c.disconnect()
    # Expiry 0 (the v5 default): the session ends with the connection.
    c = Client(host, port, True)
    c.connect(cid + "z", clean=True)
    c.subscribe(("se/t", 1))
    c.disconnect()
    c = Client(host, port, True)
    check(not c.connect(cid + "z", clean=False)["session_present"], "expiry 0 ends at close")
    c.disconnect()
    return {"ok": True}


@scenario
def keepalive(host, port, version="5"):
    v5 = version == "5"
    c = Client(host, port, v5)
    c.connect(uniq("ka"), keepalive=1)
    start = time.monotonic()
    rc = c.expect_closed(timeout=5)
    took = time.monotonic() - start
    # 1.5 x 1 s: closed after 1.5 s, allow scheduling slack but not "never".
    check(1.2 <= took <= 3.5, f"keep alive 1 s: closed after {took:.2f} s")
    if v5:
        check(rc == 0x8D, f"v5 keep alive timeout reason 0x8D, got {rc}")
    # Pings keep a connection alive past 1.5 x keep alive.
    c = Client(host, port, v5)
    c.connect(uniq("ka"), keepalive=1)
    for _ in range(5):
        time.sleep(0.5)
        c.ping()
        check(c.recv()["type"] == PINGRESP, "PINGRESP")
    c.disconnect()
    return {"closed_after": round(took, 1)}


@scenario
def server_keep_alive(host, port, expected="2"):
    c = Client(host, port, True)
    ack = c.connect(uniq("ska"), keepalive=600)
    check(ack["props"].get("server_keep_alive") == int(expected),
          f"Server Keep Alive {expected} in CONNACK: {ack}")
    c.disconnect()
    c = Client(host, port, True)
    ack = c.connect(uniq("ska"), keepalive=0)
    check(ack["props"].get("server_keep_alive") == int(expected), f"keep alive 0 lowered: {ack}")
    rc = c.expect_closed(timeout=int(expected) * 1.5 + 3)
    check(rc == 0x8D, f"closed by the server keep alive with 0x8D, got {rc}")
    # MQTT 3.1.1 cannot be told: its keep alive stands (Mosquitto 2.0.11 does the same).
    c = Client(host, port, False)
    ack = c.connect(uniq("ka311"), keepalive=60, expect_ok=False)
    check(ack["rc"] == 0, f"3.1.1 keep alive 60 accepted: {ack}")
    try:
        c.recv(int(expected) * 2)
        still_open = True
    except TimeoutError:
        still_open = True
    except Exception:
        still_open = False
    c.close()
    return {"ok": True, "v311_keepalive_60_open_after_4s": still_open}


@scenario
def takeover(host, port, version="5"):
    """Session takeover: the old connection is closed (v5: DISCONNECT 0x8E); its will fires."""
    v5 = version == "5"
    w = Client(host, port, v5)
    w.connect(uniq("w"))
    w.subscribe(("to/will", 0))
    cid = uniq("to")
    a = Client(host, port, v5)
    a.connect(cid, clean=False, props_={"session_expiry": 60} if v5 else None,
              will={"topic": "to/will", "payload": "gone"})
    b = Client(host, port, v5)
    ack = b.connect(cid, clean=False, props_={"session_expiry": 60} if v5 else None)
    rc = a.expect_closed()
    wills = w.messages(1.0)
    b.disconnect(props_={"session_expiry": 0} if v5 else None)
    w.disconnect()
    return {"old_disconnect_rc": rc, "session_present": ack["session_present"],
            "wills": [m["payload"].decode() for m in wills]}


@scenario
def auth(host, port):
    """Run against a broker with allow_anonymous = false and user sensor / password secret."""
    c = Client(host, port, True)
    ack = c.connect(uniq("anon"), expect_ok=False)
    check(ack["rc"] == 0x87, f"v5 anonymous: CONNACK 0x87, got {ack}")
    c = Client(host, port, False)
    ack = c.connect(uniq("anon"), expect_ok=False)
    check(ack["rc"] == 5, f"v3.1.1 anonymous: CONNACK 5, got {ack}")
    c = Client(host, port, True)
    c.connect(uniq("user"), username="sensor", password="secret")
    c.subscribe(("au/t", 0))
    c.publish("au/t", "hi")
    check(c.recv()["payload"] == b"hi", "authenticated client works")
    c.disconnect()
    import subprocess
    out = subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-t", "au/x", "-m", "x",
                          "-u", "sensor", "-P", "secret", "-V", "mqttv311"],
                         capture_output=True, timeout=10)
    check(out.returncode == 0, f"mosquitto_pub with a user name: {out}")
    out = subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-t", "au/x", "-m", "x",
                          "-u", "sensor", "-P", "wrong", "-V", "mqttv311"],
                         capture_output=True, timeout=10)
    check(out.returncode != 0, "mosquitto_pub with a wrong password must be refused")
    out = subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-t", "au/x", "-m", "x",
                          "-V", "mqttv5"], capture_output=True, timeout=10)
    check(out.returncode != 0, "mosquitto_pub without a user name must be refused")
    return {"ok": True}


@scenario
def mosquitto_clients(host, port, version="mqttv5"):
    """Debian's mosquitto_sub / mosquitto_pub: QoS 0/1/2, retained, user properties (v5)."""
    import subprocess
    base = ["-h", host, "-p", str(port), "-V", version]
    topic = uniq("mc")
    subprocess.run(["mosquitto_pub", *base, "-t", f"{topic}/ret", "-m", "kept", "-r", "-q", "1"],
                   check=True, timeout=10)
    sub = subprocess.Popen(["mosquitto_sub", *base, "-t", f"{topic}/#", "-q", "2", "-v", "-C", "4",
                            "-W", "10"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        for q in range(3):
            extra = ["-D", "publish", "user-property", "k", f"v{q}"] if version == "mqttv5" else []
            subprocess.run(["mosquitto_pub", *base, "-t", f"{topic}/q{q}", "-m", f"m{q}", "-q",
                            str(q), *extra], check=True, timeout=10)
        out, _ = sub.communicate(timeout=15)
    finally:
        sub.kill()
    lines = sorted(line.replace(topic, "T") for line in out.splitlines())
    check(lines == ["T/q0 m0", "T/q1 m1", "T/q2 m2", "T/ret kept"], f"mosquitto_sub got {lines}")
    subprocess.run(["mosquitto_pub", *base, "-t", f"{topic}/ret", "-n", "-r"], check=True,
                   timeout=10)
    return {"lines": lines}


# ---- delivery -----------------------------------------------------------------------------
@scenario
def redelivery_dup(host, port, version="311"):
    v5 = version == "5"
    cid = uniq("dup")
    exp = {"session_expiry": 60} if v5 else None
    c = Client(host, port, v5)
    c.connect(cid, clean=v5, props_=exp)  # 3.1.1: clean session 0 keeps the session
    c.subscribe(("dup/#", 1), ("dup2/#", 2))
    p = Client(host, port, v5)
    p.connect(uniq("p"))
    for i in range(3):
        p.publish("dup/t", f"m{i}", qos=1)
        p.recv()
    p.publish("dup2/t", "q2", qos=2)
    p.recv()
    p.ack(PUBREL, p.next_id)
    p.recv()
    first = c.messages(2.0, count=4, auto_ack=False)
    check(len(first) == 4 and not any(m["dup"] for m in first), f"first delivery: {first}")
    c.ack(PUBACK, first[0]["packet_id"])  # only m0 is acknowledged
    c.ack(PUBREC, first[3]["packet_id"])  # the QoS 2 one reaches PUBREL
    rel = c.recv()
    check(rel["type"] == PUBREL, f"PUBREL, got {rel}")
    time.sleep(0.2)
    c.close()  # no DISCONNECT, no more acks
    time.sleep(0.3)
    c = Client(host, port, v5)
    ack = c.connect(cid, clean=False, props_=exp)
    check(ack["session_present"], "session present")
    again = []
    rels = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and len(again) + len(rels) < 3:
        pk = c.recv_or_none(deadline - time.monotonic())
        if pk is None:
            break
        (again if pk["type"] == PUBLISH else rels).append(pk)
    check([(m["payload"], m["dup"], m["packet_id"]) for m in again] ==
          [(b"m1", True, first[1]["packet_id"]), (b"m2", True, first[2]["packet_id"])],
          f"unacknowledged QoS 1 redelivered with DUP and the same ids: {again}")
    check([r["packet_id"] for r in rels if r["type"] == PUBREL] == [first[3]["packet_id"]],
          f"PUBREL resent for the released QoS 2 message: {rels}")
    for m in again:
        c.ack(PUBACK, m["packet_id"])
    c.ack(PUBCOMP, first[3]["packet_id"])
    time.sleep(0.2)
    c.close()
    c = Client(host, port, v5)
    c.connect(cid, clean=False, props_=exp)
    check(c.messages(0.7) == [], "acknowledged messages are not sent again")
    c.disconnect(props_={"session_expiry": 0} if v5 else None)
    p.disconnect()
    return {"ok": True}


@scenario
def wildcards(host, port):
    subs = {}
    for f in ["#", "+/+", "a/#", "a/+/c", "$test/#", "+/b"]:
        c = Client(host, port, True)
        c.connect(uniq("wc"))
        c.subscribe((f, 0))
        subs[f] = c
    p = Client(host, port, True)
    p.connect(uniq("p"))
    for t in ["a", "a/b", "a/b/c", "x/b", "$test/b", "$test"]:
        p.publish(t, t)
    out = {}
    for f, c in subs.items():
        out[f] = sorted(m["topic"] for m in c.messages(0.7))
    # UNSUBSCRIBE: the existing filter goes (0x00), an unknown one is reported (v5 0x11).
    out["unsuback"] = subs["a/#"].unsubscribe("a/#", "never/subscribed")
    p.publish("a/b", "after")
    out["after_unsubscribe"] = [m["topic"] for m in subs["a/#"].messages(0.5)]
    out["others_still_subscribed"] = [m["topic"] for m in subs["+/+"].messages(0.5)]
    for c in subs.values():
        c.disconnect()
    p.disconnect()
    check("$test/b" not in out["#"] and "$test/b" not in out["+/b"], f"$ topics: {out}")
    check(out["a/#"] == ["a", "a/b", "a/b/c"], f"a/# matches its parent: {out}")
    return out


@scenario
def dollar_publish(host, port):
    """Clients may not publish into $SYS or to a $share name; other $-topics are ordinary."""
    s = Client(host, port, True)
    s.connect(uniq("ds"))
    s.subscribe(("$SYS/edge-test/#", 0))
    s.subscribe(("$other/#", 0))
    out = {}
    for v5 in (True, False):
        p = Client(host, port, v5)
        p.connect(uniq("dp"))
        acks = []
        for topic, qos in [("$SYS/edge-test/a", 1), ("$SYS/edge-test/b", 2),
                           ("$share/g/edge-test", 1), ("$SYS/edge-test/c", 0),
                           ("$other/edge-test", 1)]:
            pid = p.publish(topic, "x", qos=qos)
            if qos:
                a = p.recv()
                acks.append([topic, a["type"], a["rc"]])
                if a["type"] == PUBREC and a["rc"] < 0x80:
                    p.ack(PUBREL, pid)
                    check(p.recv()["type"] == PUBCOMP, "PUBCOMP")
        p.ping()
        out["v5" if v5 else "v311"] = {"acks": acks, "connected": p.recv()["type"] == PINGRESP}
        p.disconnect()
    out["delivered"] = sorted(m["topic"] for m in s.messages(0.7))
    s.disconnect()
    check(out["v5"]["acks"][0][2] == 0x87, f"v5: Not authorized: {out}")
    return out


@scenario
def overlap(host, port):
    c = Client(host, port, True)
    c.connect(uniq("ov"))
    c.subscribe(("ov/+", 0), sub_id=1)
    c.subscribe(("ov/#", 1), sub_id=2)
    c.subscribe(("ov/x", 2))  # no identifier
    p = Client(host, port, True)
    p.connect(uniq("p"))
    p.publish("ov/x", "hello", qos=2)
    p.recv()
    p.ack(PUBREL, p.next_id)
    p.recv()
    got = c.messages(1.0)
    c.disconnect()
    p.disconnect()
    ids = sorted(i for m in got for i in m["props"].get("subscription_id", []))
    return {"copies": len(got), "max_qos": max(m["qos"] for m in got), "ids": ids}


@scenario
def retained(host, port):
    p = Client(host, port, True)
    p.connect(uniq("p"))
    pre = uniq("r")
    for t, q, body in [(f"{pre}/1", 0, "1"), (f"{pre}/2", 1, "2"), (f"$ret/{pre}", 1, "3")]:
        p.publish(t, body, qos=q, retain=True)
        if q:
            p.recv()
    seen = {}
    for f in [f"{pre}/+", "#", f"$ret/{pre}"]:
        c = Client(host, port, True)
        c.connect(uniq("s"))
        c.subscribe((f, 1))
        msgs = c.messages(0.7)
        seen[f.replace(pre, "P")] = [(m["topic"].replace(pre, "P"), m["payload"].decode(),
                                      m["qos"], m["retain"]) for m in msgs if pre in m["topic"]]
        c.disconnect()
    # A live retained publish reaches existing subscribers with RETAIN 0.
    c = Client(host, port, True)
    c.connect(uniq("s"))
    c.subscribe((f"{pre}/+", 1))
    c.messages(0.5)
    p.publish(f"{pre}/1", "live", qos=0, retain=True)
    live = c.messages(0.5)
    seen["live_retain_flags"] = [m["retain"] for m in live]
    # An empty retained payload clears the topic.
    p.publish(f"{pre}/1", "", qos=1, retain=True)
    p.recv()
    c.messages(0.3)
    c.disconnect()
    c = Client(host, port, True)
    c.connect(uniq("s"))
    c.subscribe((f"{pre}/+", 1))
    seen["after_clear"] = sorted(m["payload"].decode() for m in c.messages(0.7))
    c.disconnect()
    # Clean up so later runs on the same broker start clean.
    for t in [f"{pre}/2", f"$ret/{pre}"]:
        p.publish(t, "", qos=0, retain=True)
    p.disconnect()
    return seen


@scenario
def retained_set(host, port, prefix):
    p = Client(host, port, True)
    p.connect(uniq("p"))
    p.publish(f"{prefix}/keep", "kept", qos=1, retain=True)
    p.recv()
    p.publish(f"{prefix}/gone", "x", qos=1, retain=True)
    p.recv()
    p.publish(f"{prefix}/gone", "", qos=1, retain=True)
    p.recv()
    p.disconnect()
    return {"ok": True}


@scenario
def retained_check(host, port, prefix):
    c = Client(host, port, True)
    c.connect(uniq("s"))
    c.subscribe((f"{prefix}/#", 1))
    got = c.messages(1.0)
    c.disconnect()
    check(summary(got) == [(f"{prefix}/keep", "kept", 1, True)], f"retained after restart: {got}")
    return {"ok": True}


@scenario
def will(host, port):
    w = Client(host, port, True)
    w.connect(uniq("w"))
    w.subscribe(("wl/#", 1))
    out = {}
    # 3.1.1, connection dropped without DISCONNECT: the will is published.
    a = Client(host, port, False)
    a.connect(uniq("a"), will={"topic": "wl/a", "payload": "a-died", "qos": 1})
    a.close()
    # 3.1.1 clean DISCONNECT: no will.
    b = Client(host, port, False)
    b.connect(uniq("b"), will={"topic": "wl/b", "payload": "b-died"})
    b.disconnect()
    # v5 DISCONNECT with 0x04: the will is published.
    c = Client(host, port, True)
    c.connect(uniq("c"), will={"topic": "wl/c", "payload": "c-asked", "retain": True,
                               "props": {"user_property": [["k", "v"]],
                                         "content_type": "text/plain"}})
    c.disconnect(rc=0x04)
    # A protocol violation also publishes the will.
    d = Client(host, port, True)
    d.connect(uniq("d"), will={"topic": "wl/d", "payload": "d-broke"})
    d.publish("wl/#", "bad")
    d.expect_closed()
    got = w.messages(1.5)
    out["wills"] = sorted((m["topic"], m["payload"].decode(), m["qos"]) for m in got)
    props = [m["props"] for m in got if m["topic"] == "wl/c"]
    out["will_props"] = {k: props[0].get(k) for k in ("user_property", "content_type")} \
        if props else None
    # The retained will is stored.
    r = Client(host, port, True)
    r.connect(uniq("r"))
    r.subscribe(("wl/c", 0))
    out["retained_will"] = [m["payload"].decode() for m in r.messages(0.7)]
    w.publish("wl/c", "", retain=True)
    r.disconnect()
    w.disconnect()
    return out


@scenario
def will_delay(host, port):
    w = Client(host, port, True)
    w.connect(uniq("w"))
    w.subscribe(("wd/#", 0))
    will = {"topic": "wd/a", "payload": "late", "props": {"will_delay": 2}}
    # Dropped; the will comes after ~2 s, not at once.
    cid = uniq("wd")
    a = Client(host, port, True)
    a.connect(cid, props_={"session_expiry": 30}, will=will)
    a.close()
    start = time.monotonic()
    first = w.messages(1.2)
    check(first == [], f"will sent before its delay: {first}")
    late = w.messages(3.0, count=1)
    took = time.monotonic() - start
    check([m["payload"] for m in late] == [b"late"], f"delayed will: {late}")
    # Reconnecting within the delay cancels the will.
    cid2 = uniq("wd")
    b = Client(host, port, True)
    b.connect(cid2, props_={"session_expiry": 30},
              will={"topic": "wd/b", "payload": "never", "props": {"will_delay": 2}})
    b.close()
    time.sleep(0.5)
    b = Client(host, port, True)
    check(b.connect(cid2, clean=False, props_={"session_expiry": 30})["session_present"], "resume")
    never = w.messages(2.5)
    check(never == [], f"will sent although the client came back: {never}")
    b.disconnect(props_={"session_expiry": 0})
    # A session that expires before the will delay sends the will when it ends (at ~1 s).
    c = Client(host, port, True)
    c.connect(uniq("wd"), props_={"session_expiry": 1},
              will={"topic": "wd/c", "payload": "session-ended", "props": {"will_delay": 30}})
    c.close()
    ended = w.messages(4.0, count=1)
    check([m["payload"] for m in ended] == [b"session-ended"], f"will at session end: {ended}")
    w.disconnect()
    return {"delay_observed": round(took, 1)}


@scenario
def sub_options(host, port):
    out = {}
    # No Local.
    c = Client(host, port, True)
    c.connect(uniq("nl"))
    c.subscribe(("so/nl", 0x04 | 1))
    c.publish("so/nl", "mine", qos=1)
    c.recv()  # PUBACK
    out["no_local"] = [m["payload"].decode() for m in c.messages(0.5)]
    c.disconnect()
    # Retain As Published (0x08) vs default.
    pre = uniq("rap")
    a = Client(host, port, True)
    a.connect(uniq("a"))
    a.subscribe((f"{pre}/t", 0x08 | 1))
    b = Client(host, port, True)
    b.connect(uniq("b"))
    b.subscribe((f"{pre}/t", 1))
    p = Client(host, port, True)
    p.connect(uniq("p"))
    p.publish(f"{pre}/t", "r", qos=1, retain=True)
    p.recv()
    out["rap"] = [m["retain"] for m in a.messages(0.5)]
    out["default"] = [m["retain"] for m in b.messages(0.5)]
    # Retain Handling 0 (always), 1 (only if new), 2 (never).
    for rh in (0, 1, 2):
        s = Client(host, port, True)
        s.connect(uniq("rh"))
        s.subscribe((f"{pre}/t", (rh << 4) | 1))
        first = len(s.messages(0.5))
        s.subscribe((f"{pre}/t", (rh << 4) | 1))
        second = len(s.messages(0.5))
        out[f"rh{rh}"] = [first, second]
        s.disconnect()
    p.publish(f"{pre}/t", "", retain=True)
    for x in (a, b, p):
        x.disconnect()
    return out


@scenario
def topic_alias(host, port):
    s = Client(host, port, True)
    ack = s.connect(uniq("s"), props_={"topic_alias_maximum": 2})
    check(ack["props"].get("topic_alias_maximum", 0) >= 1, f"server offers aliases: {ack}")
    s.subscribe(("ta/#", 0))
    p = Client(host, port, True)
    p.connect(uniq("p"))
    # Client -> server: alias 1 set, then used with an empty topic.
    p.publish("ta/long/topic/name", "one", props_={"topic_alias": 1})
    p.publish("", "two", props_={"topic_alias": 1})
    p.publish("ta/long/topic/name", "three")
    got = s.messages(1.0, count=3)
    check([(m["topic"], m["payload"]) for m in got] ==
          [("ta/long/topic/name", b"one"), ("ta/long/topic/name", b"two"),
           ("ta/long/topic/name", b"three")], f"aliased publishes: {got}")
    # Server -> client: aliases used (topic sent once, then empty), never above our maximum.
    aliases = [m["props"].get("topic_alias") for m in got]
    check(all(a is not None and 1 <= a <= 2 for a in aliases), f"aliases to client: {aliases}")
    # A message too large for the client is dropped; the alias it would have set must not be
    # assumed known by the client afterwards.
    t = Client(host, port, True)
    t.connect(uniq("t"), props_={"topic_alias_maximum": 2, "maximum_packet_size": 300})
    t.subscribe(("tb/#", 0))
    p.publish("tb/t", "x" * 1000)
    p.publish("tb/t", "small")
    try:
        got = t.messages(1.0)
    except KeyError as err:
        raise AssertionError(f"alias {err} used before the client was told its topic") from None
    check([(m["topic"], m["payload"]) for m in got] == [("tb/t", b"small")], f"{got}")
    t.disconnect()
    # An alias above the server's maximum is a protocol violation (0x94).
    p.publish("ta/x", "bad", props_={"topic_alias": 60000})
    rc = p.expect_closed()
    check(rc == 0x94, f"topic alias invalid: DISCONNECT 0x94, got {rc}")
    s.disconnect()
    return {"ok": True}


@scenario
def receive_maximum_flood(host, port, qos="1", routed_topic="rmf/t"):
    """A client that sends more QoS 1/2 publishes than the Receive Maximum it was told, back to
    back (QoS 2: never releasing them), gets DISCONNECT 0x93; one that keeps within it is
    served. Returns the CONNACK's Receive Maximum and the reason code seen."""
    qos = int(qos)
    ok = Client(host, port, True)
    ack = ok.connect(uniq("rmf-ok"))
    limit = ack["props"]["receive_maximum"]
    for i in range(limit):
        ok.publish(routed_topic, f"in{i}", qos=qos)
    got = [ok.recv(10) for _ in range(limit)]
    check(all(p["type"] == (PUBACK if qos == 1 else PUBREC) for p in got), f"acks: {got}")
    ok.disconnect()
    c = Client(host, port, True)
    c.connect(uniq("rmf"))
    flood = b""
    for i in range(limit + 1):
        body = (raw.mstr(routed_topic) + raw.struct.pack(">H", c.packet_id()) + raw.props(None)
                + f"m{i}".encode())
        flood += raw.frame(0x30 | (qos << 1), body)
    c.send(flood)
    rc = c.expect_closed(timeout=10)
    return {"receive_maximum": limit, "disconnect": rc}


@scenario
def receive_maximum(host, port):
    s = Client(host, port, True)
    s.connect(uniq("rm"), props_={"receive_maximum": 2})
    s.subscribe(("rm/t", 1))
    p = Client(host, port, True)
    p.connect(uniq("p"))
    for i in range(5):
        p.publish("rm/t", f"m{i}", qos=1)
        p.recv()
    first = s.messages(0.7, auto_ack=False)
    check([m["payload"] for m in first] == [b"m0", b"m1"], f"only 2 in flight: {first}")
    s.ack(PUBACK, first[0]["packet_id"])
    nxt = s.messages(0.7, auto_ack=False)
    check([m["payload"] for m in nxt] == [b"m2"], f"one more after one PUBACK: {nxt}")
    s.ack(PUBACK, first[1]["packet_id"])
    s.ack(PUBACK, nxt[0]["packet_id"])
    rest = s.messages(1.0)
    check([m["payload"] for m in rest] == [b"m3", b"m4"], f"the rest: {rest}")
    # Server side: more QoS 1 publishes than our Receive Maximum in flight is 0x93.
    s.disconnect()
    p.disconnect()
    return {"ok": True}


@scenario
def session_end_drops(host, port):
    """Deliveries still queued when a session ends are never sent: the broker counts them as
    dropped (reason "session_ended"). Receive Maximum 1 keeps all but one queued; the
    subscriber reads one without acknowledging it and leaves with session expiry 0."""
    s = Client(host, port, True)
    s.connect(uniq("sed"), props_={"receive_maximum": 1})
    s.subscribe(("sed/t", 1))
    p = Client(host, port, True)
    p.connect(uniq("p"))
    for i in range(5):
        p.publish("sed/t", f"m{i}", qos=1)
        p.recv()
    got = s.messages(0.7, auto_ack=False)
    check([m["payload"] for m in got] == [b"m0"], f"one in flight, four queued: {got}")
    s.disconnect()
    p.disconnect()
    return {"queued": 4}


@scenario
def max_packet(host, port, server_max="1024"):
    """Run against a broker with max_packet_size = server_max."""
    bystander = Client(host, port, True)
    bystander.connect(uniq("by"))
    bystander.subscribe(("mp/#", 0))
    small = Client(host, port, True)
    ack = small.connect(uniq("small"), props_={"maximum_packet_size": 200})
    check(ack["props"].get("maximum_packet_size") == int(server_max),
          f"server advertises its maximum: {ack}")
    small.subscribe(("mp/#", 0))
    p = Client(host, port, True)
    p.connect(uniq("p"))
    p.publish("mp/big", "x" * 500)
    p.publish("mp/small", "y" * 10)
    got = [m["topic"] for m in small.messages(0.7)]
    check(got == ["mp/small"], f"messages above the client's maximum are not sent: {got}")
    seen = [m["topic"] for m in bystander.messages(0.5)]
    check(seen == ["mp/big", "mp/small"], f"bystander gets both: {seen}")
    p.publish("mp/huge", "z" * (int(server_max) + 100))
    rc = p.expect_closed()
    check(rc == 0x95, f"oversized packet: DISCONNECT 0x95, got {rc}")
    bystander.publish("mp/after", "still-here")
    check([m["payload"] for m in bystander.messages(0.7)] == [b"still-here"], "bystander ok")
    # 3.1.1: just closed.
    p = Client(host, port, False)
    p.connect(uniq("p"))
    p.publish("mp/huge", "z" * (int(server_max) + 100))
    check(p.expect_closed() is None, "3.1.1 oversized: closed")
    small.disconnect()
    bystander.disconnect()
    return {"ok": True}


@scenario
def resend_too_large(host, port):
    """An unacknowledged delivery that no longer fits the client's new Maximum Packet Size is
    dropped on reconnect, and does not hold one of its Receive Maximum slots forever."""
    cid = uniq("rtl")
    c = Client(host, port, True)
    c.connect(cid, props_={"session_expiry": 60})
    c.subscribe(("rtl/#", 1))
    p = Client(host, port, True)
    p.connect(uniq("p"))
    p.publish("rtl/big", "x" * 500, qos=1)
    p.recv()
    got = c.messages(1.0, count=1, auto_ack=False)
    check(len(got) == 1, f"first delivery: {got}")
    c.close()
    time.sleep(0.3)
    c = Client(host, port, True)
    c.connect(cid, clean=False, props_={"session_expiry": 60, "maximum_packet_size": 200,
                                        "receive_maximum": 1})
    p.publish("rtl/small", "s", qos=1)
    p.recv()
    got = c.messages(1.0)
    check([m["payload"] for m in got] == [b"s"], f"after reconnect with a smaller maximum: {got}")
    c.disconnect(props_={"session_expiry": 0})
    p.disconnect()
    return {"ok": True}


@scenario
def expired_in_flight(host, port):
    """A QoS 1 message sent but not acknowledged, then expired while its subscriber was away,
    is not sent again (MQTT 5 §3.3.2.3.3: its remaining lifetime would be 0; Mosquitto removes
    it too)."""
    cid = uniq("ei")
    c = Client(host, port, True)
    c.connect(cid, props_={"session_expiry": 60})
    c.subscribe(("ei/t", 1))
    p = Client(host, port, True)
    p.connect(uniq("p"))
    p.publish("ei/t", "short", qos=1, props_={"message_expiry": 1})
    p.recv()
    p.publish("ei/t", "long", qos=1, props_={"message_expiry": 100})
    p.recv()
    got = c.messages(1.0, auto_ack=False)
    check([m["payload"] for m in got] == [b"short", b"long"], f"both delivered first: {got}")
    c.disconnect()
    time.sleep(2.2)
    c = Client(host, port, True)
    c.connect(cid, clean=False, props_={"session_expiry": 60})
    got = c.messages(1.0)
    check([m["payload"] for m in got] == [b"long"], f"only the unexpired one resent: {got}")
    check(all(m.get("dup") for m in got), f"resent with DUP: {got}")
    c.disconnect(props_={"session_expiry": 0})
    return {"ok": True}


@scenario
def message_expiry(host, port):
    cid = uniq("me")
    c = Client(host, port, True)
    c.connect(cid, props_={"session_expiry": 60})
    c.subscribe(("me/t", 1))
    c.disconnect()
    p = Client(host, port, True)
    p.connect(uniq("p"))
    p.publish("me/t", "short", qos=1, props_={"message_expiry": 1})
    p.recv()
    p.publish("me/t", "long", qos=1, props_={"message_expiry": 100})
    p.recv()
    time.sleep(2.2)
    c = Client(host, port, True)
    c.connect(cid, clean=False, props_={"session_expiry": 60})
    got = c.messages(1.0)
    check([m["payload"] for m in got] == [b"long"], f"expired message dropped: {got}")
    left = got[0]["props"].get("message_expiry")
    check(left is not None and 90 <= left <= 99, f"remaining expiry sent, reduced: {left}")
    c.disconnect(props_={"session_expiry": 0})
    # An expired retained message is not sent to new subscribers.
    p.publish("me/r1", "stale", qos=1, retain=True, props_={"message_expiry": 1})
    p.recv()
    p.publish("me/r2", "fresh", qos=1, retain=True, props_={"message_expiry": 100})
    p.recv()
    time.sleep(2.2)
    r = Client(host, port, True)
    r.connect(uniq("r"))
    r.subscribe(("me/+", 1))
    got = r.messages(0.7)
    check([m["payload"] for m in got] == [b"fresh"], f"expired retained message sent: {got}")
    r.disconnect()
    p.publish("me/r2", "", retain=True)
    p.disconnect()
    return {"ok": True}


@scenario
def connect_timeout(host, port, seconds="2"):
    """A connection that never sends CONNECT is closed after connect_timeout."""
    import socket
    sock = socket.create_connection((host, port))
    start = time.monotonic()
    sock.settimeout(float(seconds) + 5)
    try:
        data = sock.recv(10)
    except ConnectionResetError:
        data = b""
    took = time.monotonic() - start
    check(data == b"", f"unexpected bytes {data!r}")
    check(float(seconds) - 0.3 <= took <= float(seconds) + 3, f"closed after {took:.1f} s")
    return {"closed_after": round(took)}


@scenario
def properties(host, port):
    s = Client(host, port, True)
    s.connect(uniq("s"))
    s.subscribe(("pp/t", 1))
    p = Client(host, port, True)
    p.connect(uniq("p"))
    sent = {"payload_format": 1, "content_type": "application/json", "response_topic": "pp/reply",
            "correlation_data": b"\x01\x02corr", "user_property": [["a", "1"], ["b", "2"],
                                                                    ["a", "3"]]}
    p.publish("pp/t", '{"x":1}', qos=1, props_=sent)
    p.recv()
    got = s.messages(1.0)
    check(len(got) == 1, f"one message: {got}")
    pr = got[0]["props"]
    out = {k: pr.get(k) for k in ("payload_format", "content_type", "response_topic",
                                  "correlation_data", "user_property")}
    check(out == {"payload_format": 1, "content_type": "application/json",
                  "response_topic": "pp/reply", "correlation_data": b"\x01\x02corr".hex(),
                  "user_property": [["a", "1"], ["b", "2"], ["a", "3"]]}, f"passthrough: {out}")
    # A payload that is not UTF-8 although flagged so: PUBACK 0x99.
    p.publish("pp/t", b"\xff\xfe", qos=1, props_={"payload_format": 1})
    a = p.recv()
    out["bad_utf8_payload_rc"] = a.get("rc")
    s.disconnect()
    p.disconnect()
    return out


@scenario
def shared(host, port, count="40"):
    n = int(count)
    group = uniq("g")
    members = []
    for _ in range(2):
        c = Client(host, port, True)
        c.connect(uniq("m"))
        c.subscribe((f"$share/{group}/sh/+", 1))
        members.append(c)
    normal = Client(host, port, True)
    normal.connect(uniq("n"))
    normal.subscribe(("sh/+", 0))
    p = Client(host, port, True)
    p.connect(uniq("p"))
    for i in range(n):
        p.publish("sh/t", f"m{i}", qos=1)
        p.recv()
    counts = []
    payloads = []
    for c in members:
        got = c.messages(1.0)
        counts.append(len(got))
        payloads += [m["payload"] for m in got]
        c.disconnect()
    plain = len(normal.messages(0.5))
    normal.disconnect()
    p.disconnect()
    check(sorted(payloads) == sorted(f"m{i}".encode() for i in range(n)),
          f"each message to exactly one member: {counts}")
    check(all(c > 0 for c in counts), f"load balanced: {counts}")
    return {"total": sum(counts), "members_used": sum(1 for c in counts if c), "plain": plain}


@scenario
def response_info(host, port):
    c = Client(host, port, True)
    ack = c.connect(uniq("ri"), props_={"request_response_info": 1})
    info = ack["props"].get("response_info")
    check(info, f"Response Information returned: {ack}")
    # The requester can use it as a response topic: subscribe there and get a reply.
    c.subscribe((info + "/#", 0))
    r = Client(host, port, True)
    r.connect(uniq("responder"))
    r.publish(info + "/x", "reply", props_={"correlation_data": b"42"})
    got = c.messages(0.7)
    check([(m["payload"], m["props"].get("correlation_data")) for m in got] ==
          [(b"reply", b"42".hex())], f"reply: {got}")
    c.disconnect()
    c = Client(host, port, True)
    ack = c.connect(uniq("ri"))
    check("response_info" not in ack["props"], "no Response Information unless requested")
    c.disconnect()
    r.disconnect()
    return {"ok": True}


@scenario
def server_busy(host, port, limit="2"):
    """Run against a broker with max_connections = limit."""
    held = []
    for _ in range(int(limit)):
        c = Client(host, port, True)
        c.connect(uniq("h"))
        held.append(c)
    c = Client(host, port, True)
    ack5 = c.connect(uniq("x"), expect_ok=False)
    c.close()
    c = Client(host, port, False)
    ack3 = c.connect(uniq("x"), expect_ok=False)
    c.close()
    check(ack5["rc"] == 0x89, f"v5 over the limit: CONNACK 0x89 Server busy, got {ack5}")
    check(ack3["rc"] == 3, f"3.1.1 over the limit: CONNACK 3 Server unavailable, got {ack3}")
    held.pop().disconnect()
    time.sleep(0.3)
    c = Client(host, port, True)
    c.connect(uniq("y"))
    c.disconnect()
    for h in held:
        h.disconnect()
    return {"ok": True}


@scenario
def shutdown_notice(host, port):
    """Connects v5 and 3.1.1 clients and waits for the broker to be stopped (SIGTERM)."""
    c5 = Client(host, port, True)
    c5.connect(uniq("s5"))
    c3 = Client(host, port, False)
    c3.connect(uniq("s3"))
    rc = c5.expect_closed(timeout=15)
    check(rc == 0x8B, f"v5 client told Server shutting down (0x8B), got {rc}")
    check(c3.expect_closed(timeout=5) is None, "3.1.1 client closed")
    return {"ok": True}


# ---- persistence across restarts ----------------------------------------------------------
@scenario
def persist_setup(host, port, cid):
    c = Client(host, port, False)
    c.connect(cid, clean=False)
    c.subscribe(("ps/#", 1), ("ps0/#", 0))
    c.disconnect()
    p = Client(host, port, False)
    p.connect(uniq("p"))
    for i in range(3):
        p.publish("ps/t", f"q{i}", qos=1)
        p.recv()
    p.disconnect()
    return {"ok": True}


@scenario
def persist_inflight_setup(host, port, cid):
    """v5 session (expiry 300) with one QoS 1 delivery sent and never acknowledged."""
    c = Client(host, port, True)
    c.connect(cid, clean=True, props_={"session_expiry": 300})
    c.subscribe(("pi/#", 1), sub_id=9)
    p = Client(host, port, True)
    p.connect(uniq("p"))
    p.publish("pi/t", "unacked", qos=1, props_={"user_property": [["k", "v"]]})
    p.recv()
    got = c.messages(1.0, count=1, auto_ack=False)
    check([m["payload"] for m in got] == [b"unacked"], f"delivered: {got}")
    time.sleep(1.5)  # sessions are snapshotted every second
    c.close()
    p.disconnect()
    return {"packet_id": got[0]["packet_id"]}


@scenario
def persist_inflight_check(host, port, cid, packet_id):
    c = Client(host, port, True)
    ack = c.connect(cid, clean=False, props_={"session_expiry": 0})
    check(ack["session_present"], "v5 session restored after a restart")
    got = c.messages(1.0, count=1, auto_ack=False)
    check([(m["payload"], m["dup"], m["packet_id"], m["props"].get("subscription_id"),
            m["props"].get("user_property")) for m in got] ==
          [(b"unacked", True, int(packet_id), [9], [["k", "v"]])],
          f"in-flight QoS 1 resent with DUP, same id and properties after restart: {got}")
    c.ack(PUBACK, int(packet_id))
    c.disconnect()
    return {"ok": True}


@scenario
def persist_check(host, port, cid):
    c = Client(host, port, False)
    ack = c.connect(cid, clean=False)
    check(ack["session_present"], "session restored after a broker restart")
    got = c.messages(1.0)
    check([m["payload"] for m in got] == [b"q0", b"q1", b"q2"], f"queued QoS 1: {got}")
    p = Client(host, port, False)
    p.connect(uniq("p"))
    p.publish("ps0/x", "live")
    got = c.messages(1.0)
    check([m["payload"] for m in got] == [b"live"], f"subscriptions restored: {got}")
    c.disconnect()
    p.disconnect()
    return {"ok": True}


@scenario
def legacy_sample_setup(host, port):
    """Writes the state behind edge-broker/tests/data/legacy/ (run against a broker built before
    the state journal, with max_session_expiry = "50000d" so the sessions never expire, then
    stopped with SIGTERM so it saves sessions.bin and retained.bin)."""
    c3 = Client(host, port, False)
    c3.connect("legacy-311", clean=False)
    check(c3.subscribe(("legacy/#", 1), ("legacy0/#", 0)) == [1, 0], "3.1.1 SUBACK")
    c3.disconnect()
    c5 = Client(host, port, True)
    c5.connect("legacy-v5", clean=True, props_={"session_expiry": 0xFFFFFFFF})
    check(c5.subscribe(("legacy5/+", 2), sub_id=7) == [2], "v5 SUBACK")
    check(c5.subscribe(("$share/grp/legacy-shared/#", 1)) == [1], "shared SUBACK")
    p = Client(host, port, True)
    p.connect(uniq("p"))
    for i in range(3):
        p.publish("legacy/t", f"q{i}", qos=1)
        p.recv()
    p.publish("legacy5/x", "unacked", qos=1,
              props_={"user_property": [["k", "v"]], "content_type": "text/plain",
                      "correlation_data": b"\x01\x02"})
    p.recv()
    got = c5.messages(1.0, count=1, auto_ack=False)
    check([m["payload"] for m in got] == [b"unacked"], f"delivered: {got}")
    c5.close()
    time.sleep(0.5)
    p.publish("legacy5/y", "queued", qos=2)
    check(p.recv()["type"] == PUBREC, "PUBREC")
    p.ack(PUBREL, p.next_id)
    check(p.recv()["type"] == PUBCOMP, "PUBCOMP")
    p.publish("legacy-retained/a", "ra", qos=1, retain=True)
    p.recv()
    p.publish("legacy-retained/b", "rb", qos=0, retain=True,
              props_={"user_property": [["rk", "rv"]]})
    p.disconnect()
    time.sleep(1.5)  # the legacy snapshot runs every second
    return {"inflight_packet_id": got[0]["packet_id"]}


@scenario
def legacy_sample_check(host, port, inflight_packet_id):
    """What the sessions and retained messages of edge-broker/tests/data/legacy/ hold, checked
    on a broker that migrated them."""
    c3 = Client(host, port, False)
    ack = c3.connect("legacy-311", clean=False)
    check(ack["session_present"], "the 3.1.1 session was migrated")
    got = c3.messages(1.0)
    check([(m["topic"], m["payload"], m["qos"]) for m in got] ==
          [("legacy/t", b"q%d" % i, 1) for i in range(3)], f"queued QoS 1: {got}")
    c5 = Client(host, port, True)
    ack = c5.connect("legacy-v5", clean=False, props_={"session_expiry": 0xFFFFFFFF})
    check(ack["session_present"], "the v5 session was migrated")
    got = c5.messages(1.5, count=2, auto_ack=False)
    check(len(got) == 2, f"the in-flight and the queued delivery: {got}")
    first, second = got
    check((first["payload"], first["dup"], first["packet_id"], first["qos"]) ==
          (b"unacked", True, int(inflight_packet_id), 1), f"in flight, resent with DUP: {first}")
    check(first["props"].get("user_property") == [["k", "v"]] and
          first["props"].get("content_type") == "text/plain" and
          first["props"].get("correlation_data") == "0102" and
          first["props"].get("subscription_id") == [7], f"properties kept: {first}")
    check((second["payload"], second["qos"], second["props"].get("subscription_id")) ==
          (b"queued", 2, [7]), f"queued QoS 2: {second}")
    c5.ack(PUBACK, first["packet_id"])
    c5.ack(PUBREC, second["packet_id"])
    check(c5.recv()["type"] == PUBREL, "PUBREL")
    c5.ack(PUBCOMP, second["packet_id"])
    # Subscriptions came along: live messages reach both sessions.
    p = Client(host, port, True)
    p.connect(uniq("p"))
    p.publish("legacy0/live", "l0")
    p.publish("legacy5/live", "l5")
    p.publish("legacy-shared/live", "shared", qos=1)
    p.recv()
    got3 = [m["payload"] for m in c3.messages(1.0)]
    got5 = sorted(m["payload"] for m in c5.messages(1.0))
    check(got3 == [b"l0"], f"3.1.1 subscriptions: {got3}")
    check(got5 == [b"l5", b"shared"], f"v5 subscriptions, the shared one too: {got5}")
    # Retained messages came along.
    r = Client(host, port, True)
    r.connect(uniq("r"))
    r.subscribe(("legacy-retained/#", 1))
    got = sorted((m["topic"], m["payload"], m["props"].get("user_property"))
                 for m in r.messages(1.0))
    check(got == [("legacy-retained/a", b"ra", None),
                  ("legacy-retained/b", b"rb", [["rk", "rv"]])], f"retained: {got}")
    for c in (c3, c5, p, r):
        c.disconnect()
    return {"ok": True}


@scenario
def routed_order(host, port, count="2000"):
    """Pipelined QoS 1 publishes on a routed topic: acks and deliveries keep the client's order."""
    n = int(count)
    s = Client(host, port, True)
    s.connect(uniq("s"))
    s.subscribe(("ord/#", 1))
    p = Client(host, port, True)
    p.connect(uniq("p"))
    # Pipelined, within the Receive Maximum the broker announces (100 by default): a client
    # that sends more unacknowledged QoS 1 publishes gets DISCONNECT 0x93 (MQTT 5 §4.9).
    window = threading.Semaphore(50)

    def send_all():
        for i in range(n):
            window.acquire()
            p.publish("ord/t", f"m{i}", qos=1, packet_id=i % 65535 + 1)

    # The subscriber reads (and acknowledges) while the publisher sends, as a device does: a
    # subscriber that reads nothing for 2,000 messages is held to max_inflight_messages +
    # max_queued_messages (1,100 by default, Mosquitto's are 20 + 1,000) and loses the rest.
    received = []
    reader = threading.Thread(target=lambda: received.extend(s.messages(15.0, count=n)))
    reader.start()
    sender = threading.Thread(target=send_all)
    sender.start()
    acks = []
    while len(acks) < n:
        a = p.recv(10)
        check(a["type"] == PUBACK and a["rc"] == 0, f"PUBACK: {a}")
        acks.append(a["packet_id"])
        window.release()
    sender.join()
    check(acks == [i % 65535 + 1 for i in range(n)], "PUBACKs out of order")
    reader.join()
    got = [m["payload"].decode() for m in received]
    check(got == [f"m{i}" for i in range(n)], f"deliveries out of order or missing ({len(got)})")
    s.disconnect()
    p.disconnect()
    return {"ok": True}


# ---- log full -----------------------------------------------------------------------------
@scenario
def log_reject(host, port):
    """Run against a broker with a tiny log and when_full = reject; `full/#` is routed."""
    p = Client(host, port, True)
    p.connect(uniq("p5"))
    rcs = []
    for i in range(400):
        p.publish("full/t", "x" * 1000, qos=1)
        a = p.recv()
        rcs.append(a["rc"])
        if a["rc"]:
            break
    check(rcs[-1] == 0x97, f"v5: PUBACK 0x97 Quota exceeded when the log is full: {rcs[-5:]}")
    # Pipelined publishes into the full log: each refused, acks in order.
    for i in range(5):
        p.publish("full/t", "x" * 1000, qos=1, packet_id=1000 + i)
    acks = [p.recv() for _ in range(5)]
    check([(a["packet_id"], a["rc"]) for a in acks] == [(1000 + i, 0x97) for i in range(5)],
          f"pipelined refusals: {acks}")
    p.ping()
    check(p.recv()["type"] == PINGRESP, "the v5 client stays connected")
    q = Client(host, port, False)
    q.connect(uniq("p311"))
    q.publish("full/t", "x" * 1000, qos=1)
    check(q.expect_closed() is None, "3.1.1 has no negative PUBACK: the connection is closed")
    p.disconnect()
    return {"accepted_before_full": len(rcs) - 1}


@scenario
def log_block(host, port):
    """Tiny log, when_full = block: the publisher stalls; other connections keep working."""
    s = Client(host, port, True)
    s.connect(uniq("s"))
    s.subscribe(("local/#", 0))
    p = Client(host, port, True)
    p.connect(uniq("p"))
    acked = 0
    stalled = False
    for i in range(400):
        p.publish("full/t", "x" * 1000, qos=1)
        if p.recv_or_none(1.0) is None:
            stalled = True
            break
        acked += 1
    check(stalled, f"publisher never stalled ({acked} acks)")
    o = Client(host, port, True)
    o.connect(uniq("o"))
    for i in range(3):
        s.ping()
        check(s.recv()["type"] == PINGRESP, "subscriber still answered")
        o.publish("local/x", f"l{i}")
        got = s.messages(1.0, count=1)
        check([m["payload"] for m in got] == [f"l{i}".encode()], f"local delivery: {got}")
    check(p.recv_or_none(0.5) is None, "the blocked publish is still not acknowledged")
    # A blocked publisher is not cut off for keep alive: the broker stopped reading, not it.
    k = Client(host, port, True)
    k.connect(uniq("k"), keepalive=1)
    k.publish("full/t", "x" * 1000, qos=1)
    time.sleep(0.5)
    k.ping()
    try:
        late = k.recv_or_none(3.0)
    except Closed:
        late = "closed"
    check(late is None, f"blocked publisher with keep alive 1 s disconnected: {late}")
    k.close()
    for x in (s, o):
        x.disconnect()
    p.close()
    return {"acked_before_stall": acked}


# ---- limits on what clients can make the broker hold (state) -----------------------------
def in_parallel(count, workers, fn):
    """Runs fn(i) for i in range(count) on `workers` threads; returns the results in order."""
    results = [None] * count

    def work(start):
        for i in range(start, count, workers):
            try:
                results[i] = fn(i)
            except Exception as err:  # noqa: BLE001 - reported as the result
                results[i] = f"error: {err}"
    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@scenario
def many_sessions(host, port, count="5000", prefix="many", version="311"):
    """`count` persistent sessions subscribed to `#` at QoS 1, disconnected; counts the CONNACK
    codes (refused ones: v5 0x97, 3.1.1 0x03) and SUBACK codes."""
    v5 = version == "5"

    def one(i):
        c = Client(host, port, v5, timeout=30)
        ack = c.connect(f"{prefix}-{i}", clean=v5,
                        props_={"session_expiry": 3600} if v5 else None, expect_ok=False)
        if ack["rc"] != 0:
            c.close()
            return f"connack {ack['rc']:#x}"
        codes = c.subscribe(("#", 1))
        c.disconnect()
        return f"suback {codes[0]:#x}"
    started = time.monotonic()
    results = in_parallel(int(count), 32, one)
    tally = {}
    for r in results:
        tally[r] = tally.get(r, 0) + 1
    return {"results": tally, "seconds": round(time.monotonic() - started, 2)}


@scenario
def publish_many(host, port, topic, count="200", size="1000", qos="1", retain="0",
                 version="5", distinct="0"):
    """Publishes `count` messages of `size` bytes (to `topic`, or `topic/i` when `distinct`),
    one after the other, and tallies the acknowledgement reason codes."""
    c = Client(host, port, version == "5", timeout=30)
    c.connect(uniq("pub"))
    payload = b"x" * int(size)
    tally = {}
    started = time.monotonic()
    for i in range(int(count)):
        t = f"{topic}/{i}" if distinct == "1" else topic
        c.publish(t, payload, qos=int(qos), retain=retain == "1")
        if int(qos) == 1:
            ack = c.recv(30)
            check(ack["type"] == PUBACK, f"PUBACK: {ack}")
            key = f"{ack['rc']:#x}"
            tally[key] = tally.get(key, 0) + 1
    c.ping()
    check(c.recv(30)["type"] == PINGRESP, "PINGRESP")
    c.disconnect()
    return {"acks": tally, "seconds": round(time.monotonic() - started, 2)}


@scenario
def retained_count(host, port, filter_):
    """How many retained messages a new subscriber to `filter_` gets, and their bytes."""
    c = Client(host, port, True, timeout=30)
    c.connect(uniq("rc"))
    c.subscribe((filter_, 0))
    got = c.messages(2.0)
    c.disconnect()
    return {"count": len(got), "bytes": sum(len(m["payload"]) for m in got),
            "all_retained": all(m["retain"] for m in got)}


@scenario
def session_cap(host, port, prefix):
    """Run against max_sessions = 2: a third new persistent session is refused (v5 0x97,
    3.1.1 0x03); a clean session is not capped, nor is resuming an existing session."""
    a = Client(host, port, True)
    a.connect(f"{prefix}-a", clean=False, props_={"session_expiry": 300})
    b = Client(host, port, False)
    b.connect(f"{prefix}-b", clean=False)
    c5 = Client(host, port, True)
    refused5 = c5.connect(f"{prefix}-c", props_={"session_expiry": 300}, expect_ok=False)
    c3 = Client(host, port, False)
    refused3 = c3.connect(f"{prefix}-c3", clean=False, expect_ok=False)
    clean = Client(host, port, False)
    accepted = clean.connect(f"{prefix}-clean", clean=True, expect_ok=False)
    clean.disconnect()
    long_ids = []
    for v5 in (True, False):
        c = Client(host, port, v5)
        long_ids.append(f"{c.connect('x' * 129, expect_ok=False)['rc']:#x}")
        c.close()
    a.disconnect()
    again = Client(host, port, True)
    resumed = again.connect(f"{prefix}-a", clean=False, props_={"session_expiry": 300})
    again.disconnect()
    b.disconnect()
    return {"v5": f"{refused5['rc']:#x}", "v311": f"{refused3['rc']:#x}",
            "clean": f"{accepted['rc']:#x}", "resumed": resumed["session_present"],
            "long_client_id": long_ids}


@scenario
def subscription_cap(host, port):
    """Run against max_subscriptions_per_client = 3 and max_subscription_bytes_per_client =
    "8KiB" (a filter costs its text and 1 KiB per level): the 4th subscription, and one past
    the byte cap, are refused (0x97 / 0x80); replacing an existing one is not."""
    out = {}
    for v5 in (True, False):
        c = Client(host, port, v5)
        c.connect(uniq("sc"))
        codes = c.subscribe(("a/1", 1), ("a/2", 1), ("a/3", 1), ("a/4", 1))
        codes += c.subscribe(("a/1", 0))
        c.unsubscribe("a/3")
        codes += c.subscribe(("b/c/d/e/f", 0))
        codes += c.subscribe(("b/ok", 0))
        out["v5" if v5 else "v311"] = [f"{x:#x}" for x in codes]
        c.disconnect()
    return out


@scenario
def durable_setup(host, port, cid):
    """A persistent subscriber, then a QoS 1 publish queued for it while offline and a
    retained message: the scenario ends right after the PUBACKs (the test then kills the
    broker with SIGKILL)."""
    c = Client(host, port, True)
    c.connect(cid, clean=True, props_={"session_expiry": 300})
    check(c.subscribe(("dur/#", 1)) == [1], "SUBACK")
    c.close()
    p = Client(host, port, True)
    p.connect(uniq("p"))
    p.publish("dur/queued", "acked-before-the-crash", qos=1)
    check(p.recv()["rc"] == 0, "PUBACK")
    p.publish("durable-retained/x", "kept", qos=1, retain=True)
    check(p.recv()["rc"] == 0, "PUBACK")
    p.close()
    return {"ok": True}


@scenario
def durable_check(host, port, cid):
    c = Client(host, port, True)
    ack = c.connect(cid, clean=False, props_={"session_expiry": 300})
    check(ack["session_present"], "the session survived")
    got = [m["payload"] for m in c.messages(1.0)]
    check(got == [b"acked-before-the-crash"], f"the acknowledged queued message: {got}")
    c.subscribe(("durable-retained/#", 1))
    got = [(m["payload"], m["retain"]) for m in c.messages(1.0)]
    check(got == [(b"kept", True)], f"the acknowledged retained message: {got}")
    c.disconnect()
    return {"ok": True}


# ---- bad input ----------------------------------------------------------------------------
BAD = {
    # name: (v5?, bytes after CONNECT, expected v5 reason or None for "closed")
    "second_connect": (True, raw.frame(0x10, raw.mstr("MQTT") + b"\x05\x02\x00\x3c\x00" +
                                       raw.mstr("x")), 0x82),
    "wildcard_publish": (True, raw.frame(0x30, raw.mstr("a/+/b") + b"\x00" + b"p"), 0x90),
    "wildcard_publish_311": (False, raw.frame(0x30, raw.mstr("a/#") + b"p"), None),
    "invalid_utf8_topic": (True, raw.frame(0x30, b"\x00\x02\xc3\x28\x00p"), 0x81),
    "invalid_utf8_topic_311": (False, raw.frame(0x30, b"\x00\x02\xc3\x28p"), None),
    "nul_in_topic": (True, raw.frame(0x30, b"\x00\x03a\x00b\x00p"), 0x81),
    "reserved_type_0": (True, b"\x00\x00", 0x81),
    "bad_flags_subscribe": (True, raw.frame(0x80, b"\x00\x01\x00" + raw.mstr("a") + b"\x00"),
                            0x81),
    "qos3_publish": (True, raw.frame(0x36, raw.mstr("a") + b"\x00\x01\x00p"), 0x81),
    "remaining_length_5_bytes": (True, b"\x30\xff\xff\xff\xff\x7f", 0x81),
    "truncated_properties": (True, raw.frame(0x30, raw.mstr("a") + b"\x05\x26"), 0x81),
    "unknown_property": (True, raw.frame(0x30, raw.mstr("a") + b"\x02\x7f\x00p"), 0x81),
    "zero_packet_id": (True, raw.frame(0x32, raw.mstr("a") + b"\x00\x00\x00p"), None),
    "empty_subscribe": (True, raw.frame(0x82, b"\x00\x01\x00"), None),
    "connack_from_client": (True, b"\x20\x03\x00\x00\x00", None),
    "subscribe_qos3": (True, raw.frame(0x82, b"\x00\x01\x00" + raw.mstr("a") + b"\x03"), 0x81),
    "empty_topic_no_alias": (True, raw.frame(0x30, raw.mstr("") + b"\x00p"), 0x82),
    "topic_alias_zero": (True, raw.frame(0x30, raw.mstr("a") + b"\x03\x23\x00\x00p"), 0x94),
    "disconnect_sets_expiry": (True, raw.frame(0xE0, b"\x00\x05\x11\x00\x00\x00\x0a"),
                               0x82),
    # 101 QoS 2 publishes awaiting PUBREL with Receive Maximum 100 (the default max_inflight).
    "receive_maximum_exceeded": (True, b"".join(
        raw.frame(0x34, raw.mstr("q2") + bytes([i >> 8, i & 0xFF]) + b"\x00p")
        for i in range(1, 102)), 0x93),
    "shared_no_local": (True, raw.frame(0x82, b"\x00\x01\x00" + raw.mstr("$share/g/a") +
                                        b"\x05"), 0x82),
}


@scenario
def bad_input(host, port):
    """Every violation closes only its own connection, with the right v5 reason code."""
    bystander = Client(host, port, True)
    bystander.connect(uniq("by"))
    bystander.subscribe(("bi/#", 1))
    results = {}
    failures = []
    for name, (v5, data, expected) in BAD.items():
        c = Client(host, port, v5)
        c.connect(uniq(name[:10]))
        c.send(data)
        try:
            rc = c.expect_closed(timeout=3)
        except AssertionError as err:
            failures.append(f"{name}: {err}")
            continue
        results[name] = rc
        if expected is not None and rc != expected:
            failures.append(f"{name}: reason {rc!r}, expected {expected:#x}")
        elif expected is None and v5 and rc is None:
            failures.append(f"{name}: closed without a DISCONNECT reason")
        bystander.publish("bi/alive", name, qos=1)
        got = bystander.messages(2.0, count=1)
        if [m["payload"] for m in got] != [name.encode()]:
            failures.append(f"after {name}: bystander got {got}")
        # Drain the bystander's PUBACK for its own publish.
    # Garbage before CONNECT, and a CONNECT that is not MQTT.
    for name, data in [("garbage_first", b"GET / HTTP/1.1\r\n\r\n"),
                       ("bad_protocol_level", raw.frame(0x10, raw.mstr("MQTT") +
                                                         b"\x09\x02\x00\x3c" + raw.mstr("x")))]:
        c = Client(host, port, False)
        c.send(data)
        try:
            p = c.recv(3)
            results[name] = p.get("rc")
            c.expect_closed(3)
        except Closed:
            results[name] = "closed"
        except (TimeoutError, AssertionError):
            failures.append(f"{name}: connection left open")
    if results.get("bad_protocol_level") != 1:
        failures.append("unsupported protocol level: CONNACK 0x01 expected, got "
                        f"{results.get('bad_protocol_level')}")
    bystander.publish("bi/alive", "end", qos=1)
    got = bystander.messages(2.0, count=1)
    if [m["payload"] for m in got] != [b"end"]:
        failures.append(f"bystander at the end: {got}")
    bystander.disconnect()
    check(not failures, "; ".join(failures))
    return {k: (hex(v) if isinstance(v, int) else v) for k, v in results.items()}


# ---- hostile input -------------------------------------------------------------------------
@scenario
def deep_filter(host, port, levels="7999", session="persist", cid=""):
    """SUBSCRIBE (v5 and 3.1.1) to a filter of LEVELS levels, then disconnect; with
    session=persist the v5 client keeps its session (expiry 60 s) so the filter is saved.
    Reports the SUBACK codes; a bystander must still get its own publish afterwards."""
    text = "/".join(["a"] * int(levels))
    codes = {}
    for v5 in (True, False):
        c = Client(host, port, v5)
        persist = session == "persist" and v5
        c.connect((cid or uniq("deep")) + ("" if v5 else "-311"), clean=not persist,
                  props_={"session_expiry": 60} if persist else None)
        codes["v5" if v5 else "v311"] = c.subscribe((text, 1))[0]
        c.disconnect()
    bystander = Client(host, port, True)
    bystander.connect(uniq("by"))
    bystander.subscribe(("deep/alive", 1))
    bystander.publish("deep/alive", "still here", qos=1)
    got = bystander.messages(3.0, count=1)
    check([m["payload"] for m in got] == [b"still here"], f"bystander got {got}")
    bystander.disconnect()
    return {k: hex(v) for k, v in codes.items()}


def main():
    name, host, port, *rest = sys.argv[1:]
    try:
        result = SCENARIOS[name](host, int(port), *rest)
    except AssertionError as err:
        print(f"scenario {name} failed: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
