"""Parked idle MQTT connections (`[mqtt] park_idle_after`, issue 17), run by
tests/tests/mqtt_parking.rs against an edge-broker that parks after a short idle time.

Usage: mqtt_parking.py SCENARIO HOST PORT METRICS_ADDR [ARG...]

A parked connection has no task of its own: only the broker's shared watcher can wake it. Each
scenario waits (polling `/metrics` at METRICS_ADDR, never sleeping a guessed time) until the
connections it cares about are parked, then does the one thing that must wake them: a packet,
a delivery, a takeover, a keep-alive deadline, a closed socket. A wakeup that is lost shows as
a missing answer, a missing message or a connection that is never closed. Clients are real:
the raw client of mqtt_raw.py (exact bytes, reason codes, PUBACKs when the scenario says),
paho-mqtt and mosquitto_pub.

Prints one JSON line of observations; a failed check exits 1 with the reason on stderr.
"""
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqtt_raw import (  # noqa: E402
    PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, Client, Closed)
from mqtt_scenarios import check, uniq  # noqa: E402

SCENARIOS = {}

# The gauge of connections parked now, and the open connections (parked ones included).
PARKED = "edge_mqtt_connections_parked"
OPEN = 'edge_connections{protocol="mqtt"}'
# How long a state may take to show in /metrics before the scenario gives up on it.
WAIT = 10.0


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


class Metrics:
    """Samples of the broker's `/metrics`."""

    def __init__(self, addr):
        self.url = f"http://{addr}/metrics"

    def sample(self, name):
        """The value of sample `name` (with its labels as rendered), or None if absent."""
        with urllib.request.urlopen(self.url, timeout=10) as answer:
            text = answer.read().decode()
        for line in text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == name:
                return float(value)
        return None

    def wait(self, name, want, why, timeout=WAIT):
        """Polls until sample `name` reads `want`; fails saying what it read instead."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.sample(name)
            if got == want:
                return
            if time.monotonic() > deadline:
                seen = "missing from /metrics" if got is None else f"{got:g}"
                raise AssertionError(f"{name} is {seen}, not {want}, after {timeout:g} s: {why}")
            time.sleep(0.05)

    def parked(self, want, why, timeout=WAIT):
        self.wait(PARKED, want, why, timeout)

    def open(self, want, why):
        self.wait(OPEN, want, why)


def acks_for(client, packet_ids, timeout=WAIT):
    """Reads until a PUBACK arrived for each of `packet_ids` (a publisher's QoS 1 sends)."""
    wanted = set(packet_ids)
    deadline = time.monotonic() + timeout
    while wanted:
        left = deadline - time.monotonic()
        check(left > 0, f"no PUBACK for packet ids {sorted(wanted)}")
        p = client.recv(left)
        if p["type"] == PUBACK:
            check(p["rc"] in (0, 0x10), f"PUBACK refused: {p}")
            wanted.discard(p["packet_id"])


# ---- a packet wakes a parked connection ---------------------------------------------------
@scenario
def idle_then_subscribe(host, port, m, version="5", keepalive="0"):
    """An idle client is parked; its SUBSCRIBEs and a PINGREQ each wake it and are answered;
    idle again, it is parked again. Parked connections still count as open. With a keep
    alive (60 s: its deadline cannot be what wakes it within the answer's 5 s), the parked
    connection has a deadline registered, and its socket must still wake it."""
    v5 = version == "5"
    c = Client(host, port, v5)
    c.connect(uniq("idle"), keepalive=int(keepalive))
    m.parked(1, f"one idle client (keep alive {keepalive}) is parked")
    m.open(1, "a parked connection still counts as open")
    codes = []
    for i in range(3):
        # Client.subscribe fails unless the SUBACK for this packet id arrives.
        codes.append(c.subscribe((f"idle/{i}", 1)))
        m.parked(1, f"parked again after SUBACK {i}")
    c.ping()
    check(c.recv()["type"] == PINGRESP, "PINGREQ to a parked connection answered")
    m.parked(1, "parked again after PINGRESP")
    c.disconnect()
    m.parked(0, "DISCONNECT from a parked connection ends it")
    m.open(0, "no connection left open")
    return {"suback_codes": codes}


# ---- a delivery wakes a parked subscriber -------------------------------------------------
def paho_subscriber(host, port, v5, cid, filters):
    """A paho subscriber with a persistent session (keep alive 0, so it never pings); returns
    the client and the list its messages arrive in, as (topic, payload, qos)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    if v5:
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    else:
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                          protocol=mqtt.MQTTv311, clean_session=False)
    got = []
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(_c, _u, msg):
        with lock:
            got.append((msg.topic, msg.payload.decode(), msg.qos))

    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        sub.connect(host, port, keepalive=0, clean_start=False, properties=props)
    else:
        sub.connect(host, port, keepalive=0)
    sub.loop_start()
    sub.subscribe(filters)
    check(subscribed.wait(WAIT), "paho subscriber got no SUBACK")
    return sub, got, lock


@scenario
def parked_subscriber(host, port, m, version="5", kind="paho", rounds="3", per_round="10"):
    """A subscriber with a persistent session and a QoS 0 and a QoS 1 subscription is parked;
    each round, a publisher sends `per_round` messages to each of them (QoS 0 and 1
    interleaved) while both are parked. Every message arrives, in order per subscription. The
    paho subscriber acknowledges at once; the raw one holds its PUBACKs until the broker has
    had time to park it again (`kind` = "raw"). Either way, reconnecting to the session
    afterwards redelivers nothing."""
    v5 = version == "5"
    rounds, per_round = int(rounds), int(per_round)
    cid = uniq("parked-sub")
    session = {"session_expiry": 300} if v5 else None
    filters = [("pk/q0/#", 0), ("pk/q1/#", 1)]
    raw_sub = None
    if kind == "paho":
        sub, got, lock = paho_subscriber(host, port, v5, cid, filters)
    else:
        raw_sub = Client(host, port, v5)
        raw_sub.connect(cid, clean=False, keepalive=0, props_=session)
        granted = raw_sub.subscribe(*filters)
        check(granted == [0, 1], f"SUBACK granted {granted}")
        got, lock = [], threading.Lock()
    m.parked(1, "the subscriber is parked before anything is published")
    pub = Client(host, port, v5)
    pub.connect(uniq("pub"), keepalive=0)
    held_acks, parked_unacked = [], []
    for r in range(rounds):
        ids = []
        for i in range(per_round):
            pub.publish(f"pk/q0/r{r}", f"{r}-{i}", qos=0)
            ids.append(pub.publish(f"pk/q1/r{r}", f"{r}-{i}", qos=1))
        acks_for(pub, ids)
        want = 2 * per_round * (r + 1)
        if raw_sub is not None:
            msgs = raw_sub.messages(WAIT, count=2 * per_round, auto_ack=False)
            for p in msgs:
                got.append((p["topic"], p["payload"].decode(), p["qos"]))
                if p["qos"] == 1:
                    held_acks.append(p["packet_id"])
        deadline = time.monotonic() + WAIT
        while len(got) < want and time.monotonic() < deadline:
            time.sleep(0.05)
        with lock:
            check(len(got) == want, f"round {r}: the parked subscriber got {len(got)} of "
                                    f"{want}: {got}")
        if raw_sub is not None:
            # Idle with deliveries unacknowledged: the broker may park it (not required).
            time.sleep(1.0)
            parked_unacked.append(m.sample(PARKED))
            for packet_id in held_acks:
                raw_sub.ack(PUBACK, packet_id)
            held_acks.clear()
        m.parked(2, f"subscriber and publisher parked after round {r}")
    with lock:
        received = list(got)
    expected = [f"{r}-{i}" for r in range(rounds) for i in range(per_round)]
    out = {}
    for qos in (0, 1):
        stream = [(t, p, q) for t, p, q in received if t.startswith(f"pk/q{qos}/")]
        payloads = [p for _t, p, _q in stream]
        check(payloads == expected, f"QoS {qos} subscription, in order: {payloads}")
        check(all(q == qos for _t, _p, q in stream), f"QoS {qos} stream delivered as {stream}")
        out[f"q{qos}_received"] = len(payloads)
    out["in_order"] = True
    # What the gauge read while the raw subscriber held its PUBACKs (information only).
    out["parked_while_unacked"] = parked_unacked
    # Leave the session (it persists) and come back: nothing was left unacknowledged.
    if raw_sub is not None:
        raw_sub.disconnect()
    else:
        sub.disconnect()
        sub.loop_stop()
    back = Client(host, port, v5)
    ack = back.connect(cid, clean=False, keepalive=0, props_=session)
    out["session_present"] = ack["session_present"]
    redelivered = back.messages(1.5)
    out["redelivered"] = [(p["topic"], p["payload"].decode(), p["dup"]) for p in redelivered]
    # The session's subscriptions are still there: one more publish reaches it.
    last = pub.publish("pk/q1/last", "last", qos=1)
    acks_for(pub, [last])
    after = back.messages(WAIT, count=1)
    out["after_reconnect"] = [p["payload"].decode() for p in after]
    back.disconnect(props_={"session_expiry": 0} if v5 else None)
    pub.disconnect()
    return out


@scenario
def racing_deliveries(host, port, m, version="5", count="40", seed="17"):
    """Publishes spaced around the park threshold (0.1 to 0.3 s apart with park_idle_after
    200 ms, a fixed pseudo-random sequence), so deliveries keep meeting a subscriber that is
    just parking or just resuming, and PUBACKs keep meeting a publisher doing the same: the
    subscriber (QoS 1 and QoS 0 subscriptions, persistent session) gets every message once,
    in order, and afterwards nothing is left to redeliver."""
    import random
    v5 = version == "5"
    pace = random.Random(int(seed))
    cid = uniq("race-sub")
    session = {"session_expiry": 300} if v5 else None
    sub = Client(host, port, v5)
    sub.connect(cid, clean=False, keepalive=0, props_=session)
    sub.subscribe(("race/q0", 0), ("race/q1", 1))
    pub = Client(host, port, v5)
    pub.connect(uniq("race-pub"), keepalive=0)
    got = []
    for i in range(int(count)):
        time.sleep(pace.uniform(0.1, 0.3))
        qos = i % 2
        packet_id = pub.publish(f"race/q{qos}", str(i), qos=qos)
        if qos:
            acks_for(pub, [packet_id])
        got += sub.messages(0.05)
    got += sub.messages(WAIT, count=int(count) - len(got))
    for qos in (0, 1):
        payloads = [int(p["payload"]) for p in got if p["topic"] == f"race/q{qos}"]
        want = list(range(qos, int(count), 2))
        check(payloads == want, f"QoS {qos}: got {payloads}, want {want}")
    m.parked(2, "both parked at the end")
    sub.disconnect()
    back = Client(host, port, v5)
    ack = back.connect(cid, clean=False, keepalive=0, props_=session)
    redelivered = back.messages(1.5)
    back.disconnect(props_={"session_expiry": 0} if v5 else None)
    pub.disconnect()
    return {"received": len(got), "session_present": ack["session_present"],
            "redelivered": [p["payload"].decode() for p in redelivered]}


def expect_packet(client, ptype, packet_id, what):
    """The next packet, which must be `ptype` for `packet_id`."""
    p = client.recv()
    check(p["type"] == ptype and p.get("packet_id") == packet_id,
          f"{what}: expected packet type {ptype} for id {packet_id}, got {p}")
    return p


@scenario
def qos2_while_parked(host, port, m, version="5"):
    """QoS 2 both ways, the client's half of each exchange sent only once both clients are
    parked again (an exchange waiting on the client is nothing to do for the broker): the
    publisher's PUBREL, the subscriber's PUBREC and PUBCOMP each wake a parked connection
    and are answered (PUBCOMP, PUBREL); the message is delivered once, and reconnecting the
    subscriber's persistent session finds nothing owed."""
    v5 = version == "5"
    session = {"session_expiry": 300} if v5 else None
    cid = uniq("q2-sub")
    sub = Client(host, port, v5)
    sub.connect(cid, clean=False, keepalive=0, props_=session)
    check(sub.subscribe(("q2/t", 2)) == [2], "QoS 2 granted")
    pub = Client(host, port, v5)
    pub.connect(uniq("q2-pub"), keepalive=0)
    m.parked(2, "both idle clients are parked")
    packet_id = pub.publish("q2/t", "exactly once", qos=2)
    expect_packet(pub, PUBREC, packet_id, "the publisher's PUBREC")
    got = sub.messages(WAIT, count=1, auto_ack=False)
    m.parked(2, "parked: the publisher owing PUBREL, the subscriber owing PUBREC")
    pub.ack(PUBREL, packet_id)
    expect_packet(pub, PUBCOMP, packet_id, "PUBCOMP for a PUBREL sent while parked")
    check([(p["payload"], p["qos"]) for p in got] == [(b"exactly once", 2)],
          f"the subscriber got {got}")
    delivery = got[0]["packet_id"]
    m.parked(2, "parked again: the subscriber owing PUBREC")
    sub.ack(PUBREC, delivery)
    expect_packet(sub, PUBREL, delivery, "PUBREL for a PUBREC sent while parked")
    m.parked(2, "parked again: the subscriber owing PUBCOMP")
    sub.ack(PUBCOMP, delivery)
    m.parked(2, "both parked once the exchanges are done")
    check(sub.recv_or_none(0.5) is None, "nothing more for the subscriber")
    sub.disconnect()
    back = Client(host, port, v5)
    ack = back.connect(cid, clean=False, keepalive=0, props_=session)
    # Whatever the session still owed would come now: a PUBLISH again, or a PUBREL.
    redelivered = []
    while (p := back.recv_or_none(1.5)) is not None:
        redelivered.append("PUBLISH" if p["type"] == PUBLISH else p)
    back.disconnect(props_={"session_expiry": 0} if v5 else None)
    pub.disconnect()
    return {"session_present": ack["session_present"], "redelivered": redelivered}


# ---- the keep-alive deadline wakes a parked connection ------------------------------------
@scenario
def keepalive_silent(host, port, m, version="5", keepalive="2", first="nothing"):
    """A client with a will and keep alive `keepalive` s goes silent after CONNACK (`first` =
    "nothing") or after one SUBSCRIBE ("subscribe"), and is parked: at 1.5 x keep alive the
    broker closes it (v5: DISCONNECT 0x8D first) and publishes its will."""
    v5 = version == "5"
    w = Client(host, port, v5)
    w.connect(uniq("will-sub"), keepalive=0)
    w.subscribe(("ka/will", 1))
    s = Client(host, port, v5)
    s.connect(uniq("silent"), keepalive=int(keepalive),
              will={"topic": "ka/will", "payload": "silent-gone", "qos": 1})
    if first == "subscribe":
        s.subscribe(("ka/anything", 0))
    m.parked(2, "the will subscriber and the silent client are parked before the deadline")
    try:
        rc = s.expect_closed(timeout=WAIT)
    except AssertionError:
        raise AssertionError(f"a parked client silent for over 1.5 x {keepalive} s was not "
                             "disconnected") from None
    wills = w.messages(WAIT, count=1)
    m.parked(1, "the will subscriber is parked again, the silent client gone")
    m.open(1, "only the will subscriber is open")
    w.disconnect()
    return {"disconnect_rc": rc, "wills": [p["payload"].decode() for p in wills]}


@scenario
def keepalive_pings(host, port, m, version="5", cycles="6"):
    """A client with keep alive 1 s that sends PINGREQ every 0.5 s, each time only after it
    was parked, stays connected through `cycles` park/resume cycles (longer than 1.5 s in all,
    so the deadline must move with each ping) and gets PINGRESP to each."""
    v5 = version == "5"
    p = Client(host, port, v5)
    p.connect(uniq("pinger"), keepalive=1)
    last = time.monotonic()
    pongs = 0
    for i in range(int(cycles)):
        m.parked(1, f"the pinger is parked before ping {i}")
        time.sleep(max(0.0, last + 0.5 - time.monotonic()))
        last = time.monotonic()
        p.ping()
        try:
            answer = p.recv()
        except Closed:
            raise AssertionError(f"closed at ping {i}: the parked pinger's keep-alive deadline "
                                 "did not move with its pings") from None
        check(answer["type"] == PINGRESP, f"ping {i}: expected PINGRESP, got {answer}")
        pongs += 1
    m.open(1, "the pinger is still connected")
    p.disconnect()
    m.parked(0, "the pinger left")
    return {"pingresps": pongs}


# ---- a takeover wakes the parked holder of the session ------------------------------------
@scenario
def takeover(host, port, m, version="5", session="persistent"):
    """A second connection with the client id of a parked one: the parked one is closed (v5:
    DISCONNECT 0x8E) and its will published; the second gets its CONNACK (session present if
    the session was persistent) and the session's deliveries."""
    v5 = version == "5"
    persistent = session == "persistent"
    props = {"session_expiry": 60} if v5 and persistent else None
    w = Client(host, port, v5)
    w.connect(uniq("will-sub"), keepalive=0)
    w.subscribe(("tk/will", 0))
    cid = uniq("tk")
    a = Client(host, port, v5)
    a.connect(cid, clean=not persistent, keepalive=0, props_=props,
              will={"topic": "tk/will", "payload": "gone"})
    a.subscribe(("tk/data", 1))
    m.parked(2, "the will subscriber and the first connection are parked")
    b = Client(host, port, v5)
    ack = b.connect(cid, clean=not persistent, keepalive=0, props_=props)
    try:
        rc = a.expect_closed(timeout=WAIT)
    except AssertionError:
        raise AssertionError("the parked connection was not closed by the takeover") from None
    wills = w.messages(1.5)
    if not persistent:
        b.subscribe(("tk/data", 1))
    pid = w.publish("tk/data", "after takeover", qos=1)
    acks_for(w, [pid])
    got = b.messages(WAIT, count=1)
    m.parked(2, "the will subscriber and the second connection are parked")
    m.open(2, "the first connection is gone")
    b.disconnect(props_={"session_expiry": 0} if props else None)
    w.disconnect()
    return {"old_disconnect_rc": rc, "session_present": ack["session_present"],
            "wills": [p["payload"].decode() for p in wills],
            "new_connection_got": [p["payload"].decode() for p in got]}


# ---- stopping the broker wakes every parked connection ------------------------------------
@scenario
def shutdown(host, port, m, v5_clients="3", v311_clients="1"):
    """Connects idle v5 and 3.1.1 clients and waits for the broker to be stopped (the test
    sends SIGTERM once the gauge shows them all parked): v5 clients are told 0x8B, 3.1.1
    clients see the socket closed."""
    clients = [(Client(host, port, True), True) for _ in range(int(v5_clients))]
    clients += [(Client(host, port, False), False) for _ in range(int(v311_clients))]
    for c, v5 in clients:
        c.connect(uniq("stop5" if v5 else "stop3"), keepalive=0)
    rcs = []
    for c, v5 in clients:
        try:
            rc = c.expect_closed(timeout=45)
        except AssertionError:
            raise AssertionError("a parked client was not closed when the broker stopped") \
                from None
        rcs.append({"v5": v5, "rc": rc})
    return {"closed": rcs}


# ---- a closed socket wakes a parked connection --------------------------------------------
@scenario
def close_without_disconnect(host, port, m, version="5", how="fin"):
    """A parked client with a will closes its socket without DISCONNECT (`how`: "fin", an
    orderly close, or "rst", SO_LINGER 0): its will is published, and the parked gauge and
    the open connections drop."""
    v5 = version == "5"
    w = Client(host, port, v5)
    w.connect(uniq("will-sub"), keepalive=0)
    w.subscribe(("cl/will", 1))
    a = Client(host, port, v5)
    a.connect(uniq("closer"), keepalive=0,
              will={"topic": "cl/will", "payload": f"{how}-gone", "qos": 1})
    m.parked(2, "the will subscriber and the client are parked")
    m.open(2, "both count as open")
    if how == "rst":
        a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    a.sock.close()
    wills = w.messages(WAIT, count=1)
    m.parked(1, "the closed connection left the parked gauge")
    m.open(1, "the closed connection is no longer open")
    w.disconnect()
    return {"wills": [p["payload"].decode() for p in wills]}


# ---- many parked connections --------------------------------------------------------------
@scenario
def many_parked(host, port, m, count="300", rounds="10", park_after="0.2"):
    """`count` idle subscribers to one topic (v5 and 3.1.1, QoS 0 and 1 alternating) are all
    parked; one publish from mosquitto_pub reaches every one, exactly once; then all are
    parked again. Then `rounds` QoS 0 publishes, each sent once every subscriber got the one
    before and 0.9 to 1.1 x `park_after` (the broker's park_idle_after, in seconds) after
    it, so they meet subscribers parking, parked and just resumed: each reaches all."""
    count = int(count)
    clients = []
    for i in range(count):
        v5, qos = i % 2 == 0, (i // 2) % 2
        c = Client(host, port, v5, timeout=WAIT)
        c.connect(uniq(f"many{i}"), keepalive=0)
        granted = c.subscribe(("many/all", qos))
        check(granted == [qos], f"client {i}: SUBACK {granted}")
        clients.append((c, qos))
    m.parked(count, f"all {count} idle subscribers are parked", timeout=3 * WAIT)
    m.open(count, f"all {count} are open")
    mosquitto_pub = shutil.which("mosquitto_pub")
    check(mosquitto_pub is not None, "mosquitto_pub missing: apt-get install mosquitto-clients")
    sent = subprocess.run([mosquitto_pub, "-h", host, "-p", str(port), "-q", "1",
                           "-t", "many/all", "-m", "to everyone"], capture_output=True,
                          timeout=30)
    check(sent.returncode == 0, f"mosquitto_pub: {sent.stderr.decode()}")
    missing = []
    deadline = time.monotonic() + WAIT
    for i, (c, qos) in enumerate(clients):
        got = c.messages(max(0.05, deadline - time.monotonic()), count=1)
        if [(p["payload"], p["qos"]) for p in got] != [(b"to everyone", qos)]:
            missing.append((i, got))
    check(not missing, f"{len(missing)} of {count} parked subscribers did not get the publish: "
                       f"{missing[:5]}")
    # Nothing more arrives (each got it exactly once).
    extra = [i for i, (c, _q) in enumerate(clients) if c.recv_or_none(0.01) is not None]
    check(not extra, f"clients {extra[:10]} received more than one message")
    m.parked(count, f"all {count} are parked again", timeout=3 * WAIT)
    # Rounds of QoS 0 publishes, each once every subscriber has the one before, spaced around
    # the park threshold: deliveries land while many of the subscribers are just parking.
    pub = Client(host, port, True)
    pub.connect(uniq("many-pub"), keepalive=0)
    threshold = float(park_after)
    for k in range(int(rounds)):
        sent_at = time.monotonic()
        pub.publish("many/all", f"round {k}", qos=0)
        deadline = sent_at + WAIT
        late = []
        for i, (c, _qos) in enumerate(clients):
            got = c.messages(max(0.05, deadline - time.monotonic()), count=1)
            if [p["payload"] for p in got] != [f"round {k}".encode()]:
                late.append((i, got))
        check(not late, f"round {k}: {len(late)} of {count} subscribers did not get it: "
                        f"{late[:5]}")
        # From 0.9 to 1.1 x the threshold after this publish, a step each round.
        spacing = threshold * (0.9 + 0.2 * k / max(1, int(rounds) - 1))
        time.sleep(max(0.0, sent_at + spacing - time.monotonic()))
    pub.disconnect()
    m.parked(count, f"all {count} are parked after the rounds", timeout=3 * WAIT)
    for c, _qos in clients:
        c.disconnect()
    m.parked(0, "all left")
    m.open(0, "none open")
    return {"delivered": count}


# ---- parking off, default, and what is never parked ---------------------------------------
@scenario
def never_parked(host, port, m, seconds="6"):
    """With parking off: an idle client (keep alive 0) stays unparked for `seconds` (longer
    than the default park_idle_after, 5 s) while the gauge is sampled, and still works."""
    c = Client(host, port, True)
    c.connect(uniq("awake"), keepalive=0)
    c.subscribe(("zero/#", 1))
    samples = []
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        samples.append(m.sample(PARKED))
        time.sleep(0.1)
    check(samples and all(s == 0 for s in samples),
          f"{PARKED} samples with parking off: {sorted(set(samples), key=str)}")
    p = Client(host, port, False)
    p.connect(uniq("pub"), keepalive=0)
    acks_for(p, [p.publish("zero/t", "still works", qos=1)])
    got = c.messages(WAIT, count=1)
    check([x["payload"] for x in got] == [b"still works"], f"the idle client got {got}")
    c.ping()
    check(c.recv()["type"] == PINGRESP, "PINGRESP")
    c.disconnect()
    p.disconnect()
    return {"samples": len(samples), "max_parked": max(samples)}


@scenario
def parks_eventually(host, port, m, timeout="20"):
    """An idle client is parked at all (with the broker's park_idle_after, e.g. the default)."""
    c = Client(host, port, True)
    c.connect(uniq("idle"), keepalive=0)
    m.parked(1, "an idle client is parked", timeout=float(timeout))
    c.ping()
    check(c.recv()["type"] == PINGRESP, "PINGRESP")
    c.disconnect()
    return {"ok": True}


def paho_idle(host, port, transport, ca=None):
    """An idle paho MQTT 5 client (keep alive 0) subscribed to "unparked/t" over `transport`
    ("websockets" or "tcp"; TLS with `ca`); returns it and the list its payloads arrive in."""
    import paho.mqtt.client as mqtt
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=uniq(transport),
                    protocol=mqtt.MQTTv5, transport=transport)
    if transport == "websockets":
        c.ws_set_options(path="/mqtt")
    if ca:
        c.tls_set(ca_certs=ca)
    got, subscribed = [], threading.Event()
    c.on_message = lambda _c, _u, msg: got.append(msg.payload.decode())
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(host, port, keepalive=0)
    c.loop_start()
    c.subscribe("unparked/t", qos=1)
    check(subscribed.wait(WAIT), f"paho over {transport} (TLS: {bool(ca)}) got no SUBACK")
    return c, got


@scenario
def tls_and_websocket_not_parked(host, port, m, ws_port, tls_port, ca, seconds="2"):
    """Idle paho clients over WebSockets (ws_port) and TLS (tls_port, server certificate from
    `ca`) beside two idle raw TCP clients: the TCP ones are parked, the others never are (the
    gauge stays at 2 for `seconds`), and they still receive."""
    ws, ws_got = paho_idle(host, int(ws_port), "websockets")
    tls, tls_got = paho_idle(host, int(tls_port), "tcp", ca)
    tcp = [Client(host, port, True) for _ in range(2)]
    for c in tcp:
        c.connect(uniq("tcp"), keepalive=0)
    m.parked(2, "the two idle TCP clients are parked")
    m.open(4, "four connections open")
    samples = []
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        samples.append(m.sample(PARKED))
        time.sleep(0.1)
    check(all(s == 2 for s in samples),
          f"{PARKED} samples with 2 TCP, 1 TLS, 1 WebSocket client idle: "
          f"{sorted(set(samples), key=str)}")
    acks_for(tcp[0], [tcp[0].publish("unparked/t", "still awake", qos=1)])
    deadline = time.monotonic() + WAIT
    while (not ws_got or not tls_got) and time.monotonic() < deadline:
        time.sleep(0.05)
    check(ws_got == ["still awake"], f"WebSocket client got {ws_got}")
    check(tls_got == ["still awake"], f"TLS client got {tls_got}")
    for c in (ws, tls):
        c.disconnect()
        c.loop_stop()
    for c in tcp:
        c.disconnect()
    return {"samples": len(samples)}


def main():
    name, host, port, metrics, *rest = sys.argv[1:]
    try:
        result = SCENARIOS[name](host, int(port), Metrics(metrics), *rest)
    except AssertionError as err:
        print(f"scenario {name} failed: {err}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - a timeout or a closed socket is a failure too
        print(f"scenario {name} failed:\n{traceback.format_exc()}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
