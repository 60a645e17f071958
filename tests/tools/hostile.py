"""Attacks from the LAN, with nothing but TCP sockets, run by tests/tests/hostile.rs.

Usage: hostile.py SCENARIO HOST PORT BROKER_PID [ARG...]

Each scenario attacks the broker at HOST:PORT from addresses 127.0.0.2 and up (so that the
device it then checks, on 127.0.0.1, is another source), measures the broker's RSS
(/proc/BROKER_PID/status) before and while the attack holds (and, where subscribers stall, the
kernel's send queues of its connections, /proc/net/tcp), and prints one JSON line.
A failed check exits 1 with the reason on stderr.
"""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqtt_raw import (  # noqa: E402
    DISCONNECT, PINGRESP, PUBACK, Client, Closed, frame, mstr, varint,
)

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def attacker(host, port, i, sources):
    """A socket connected from 127.0.0.(2 + i % sources)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((f"127.0.0.{2 + i % sources}", 0))
    s.settimeout(5)
    s.connect((host, int(port)))
    return s


def still_open(socks):
    """How many of `socks` the broker has not closed."""
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n


def mqtt_device(host, port):
    """A device on 127.0.0.1 logs in: its CONNACK code."""
    c = Client(host, int(port), v5=False, timeout=5)
    ack = c.connect("device-1", expect_ok=False)
    c.close()
    return ack["rc"]


def nats_device(host, port):
    """A device on 127.0.0.1: CONNECT, PING; true when PONG comes back."""
    s = socket.create_connection((host, int(port)), timeout=5)
    buf = b""
    s.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
    deadline = time.monotonic() + 5
    try:
        while b"PONG" not in buf and b"-ERR" not in buf and time.monotonic() < deadline:
            data = s.recv(4096)
            if not data:
                break
            buf += data
    except OSError:
        pass
    s.close()
    return b"PONG\r\n" in buf


def first_bytes(proto, claim):
    """What claims `claim` bytes, sent up to one byte short of it: an MQTT CONNECT (a broker
    buffers the whole frame before it decodes it), or a NATS PUB before CONNECT."""
    if proto == "mqtt":
        body = mstr("MQTT") + bytes([4, 2]) + b"\x00\x3c" + mstr("attacker")
        return b"\x10" + varint(claim) + body + b"\x00" * (claim - len(body) - 1)
    return f"PUB attack {claim}\r\n".encode() + b"x" * (claim - 1)


@scenario
def flood(host, port, pid, proto, count, mode="idle", claim="1048576", sources="1",
          hold="1"):
    """`count` connections from `sources` addresses that never log in: `idle` ones send
    nothing, `claim` ones send the start of a CONNECT (NATS: a PUB) claiming `claim` bytes
    and keep sending it. Then a device logs in from 127.0.0.1. After `hold` seconds, how
    many attack connections are still open."""
    count, sources, claim = int(count), int(sources), int(claim)
    rss0 = rss_kib(pid)
    socks = []
    refused_at_connect = 0
    started = time.monotonic()
    for i in range(count):
        try:
            s = attacker(host, port, i, sources)
        except OSError:
            refused_at_connect += 1
            continue
        if mode == "claim":
            try:
                s.sendall(first_bytes(proto, claim))
            except OSError:
                pass
        socks.append(s)
    attack_seconds = time.monotonic() - started
    time.sleep(0.5)
    rss_attack = rss_kib(pid)
    device = mqtt_device(host, port) if proto == "mqtt" else nats_device(host, port)
    open_now = still_open(socks)
    time.sleep(float(hold))
    open_later = still_open(socks)
    for s in socks:
        s.close()
    return {
        "device": device,
        "open_during_attack": open_now,
        "open_after_hold": open_later,
        "refused_at_connect": refused_at_connect,
        "attack_seconds": attack_seconds,
        "rss_kib": [rss0, rss_attack],
        "rss_growth_kib": rss_attack - rss0,
    }


def kernel_queues(port):
    """The kernel's queues of the broker's established connections on `port` (/proc/net/tcp),
    memory seen in no RSS: the bytes unacknowledged in all their send queues together (what
    stalled subscribers make the broker hold), and the bytes unread in the fullest receive
    queue (what a client the broker does not read makes it hold)."""
    sent, unread = 0, 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state, queues = fields[1], fields[3], fields[4]
                    if state == "01" and int(local.rsplit(":", 1)[1], 16) == int(port):
                        tx, rx = (int(q, 16) for q in queues.split(":"))
                        sent += tx
                        unread = max(unread, rx)
        except FileNotFoundError:
            pass
    return sent, unread


class Peaks:
    """Peaks sampled every 20 ms until `finish`: the broker's RSS in KiB and, with `port`, its
    connections' kernel queues in bytes (see `kernel_queues`)."""

    def __init__(self, pid, port=None):
        import threading
        self.pid, self.port = pid, port
        self.rss_kib, self.send_queues, self.receive_queue = rss_kib(pid), 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        while not self.stop.is_set():
            self.rss_kib = max(self.rss_kib, rss_kib(self.pid))
            if self.port is not None:
                sent, unread = kernel_queues(self.port)
                self.send_queues = max(self.send_queues, sent)
                self.receive_queue = max(self.receive_queue, unread)
            time.sleep(0.02)

    def finish(self):
        self.stop.set()
        self.thread.join()
        return self


def publish_all(host, port, topic, count, size, qos):
    """One publisher: `count` messages of `size` bytes, QoS 1 waiting for each PUBACK."""
    p = Client(host, int(port), v5=False, timeout=30)
    p.connect(f"pub-{os.getpid()}")
    payload = b"x" * size
    for _ in range(count):
        p.publish(topic, payload, qos=qos)
        if qos:
            p.recv(30)
    p.disconnect()


def stalled_subscriber(host, port, cid, filter_, qos):
    """A subscriber with a small receive buffer that then never reads."""
    c = Client.__new__(Client)
    c.v5, c.buf, c.next_id, c.aliases, c.timeout = False, b"", 0, {}, 10
    c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.sock.settimeout(10)
    c.sock.connect((host, int(port)))
    c.connect(cid)
    c.subscribe((filter_, qos))
    return c


@scenario
def stalled_subscribers(host, port, pid, subs, count, size, qos="0"):
    """`subs` subscribers to `#` that never read; one publisher sends `count` × `size` bytes
    (QoS 1: each acknowledged before the next). The broker's peak RSS over its RSS before, and
    the peak of its connections' kernel send queues."""
    subs, count, size, qos = int(subs), int(count), int(size), int(qos)
    rss0 = rss_kib(pid)
    clients = [stalled_subscriber(host, port, f"stalled-{i}", "#", 0) for i in range(subs)]
    peaks = Peaks(pid, port)
    publish_all(host, port, "flood/t", count, size, qos)
    time.sleep(0.5)
    peaks.finish()
    for c in clients:
        c.close()
    return {"rss_kib": [rss0, peaks.rss_kib], "rss_growth_kib": peaks.rss_kib - rss0,
            "send_queue_bytes": peaks.send_queues}


@scenario
def never_puback(host, port, pid, count, size):
    """A 3.1.1 subscriber at QoS 1 that reads but never sends PUBACK; a publisher sends
    `count` × `size` bytes at QoS 1. How many PUBLISHes reached the subscriber."""
    count, size = int(count), int(size)
    rss0 = rss_kib(pid)
    sub = Client(host, int(port), v5=False, timeout=10)
    sub.connect("no-puback", clean=True)
    sub.subscribe(("np/#", 1))
    peaks = Peaks(pid)
    publish_all(host, port, "np/t", count, size, 1)
    received = 0
    while True:
        try:
            p = sub.recv(1.0)
        except TimeoutError:
            break
        if p["type"] == 3:
            received += 1
    peaks.finish()
    sub.close()
    return {"received": received, "rss_kib": [rss0, peaks.rss_kib],
            "rss_growth_kib": peaks.rss_kib - rss0}


def stream_qos0(host, port, cid, topic, seconds):
    """A publisher sending QoS 0 PUBLISHes of 200 bytes as fast as its socket takes them, for
    `seconds`; the bytes sent."""
    c = Client(host, int(port), v5=False, timeout=10)
    c.connect(cid)
    chunk = frame(0x30, mstr(topic) + b"x" * 200) * 300
    sent, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            c.sock.sendall(chunk)
        except OSError:
            break
        sent += len(chunk)
    c.close()
    return sent


@scenario
def fast_publishers_held(host, port, pid, publishers, seconds):
    """`publishers` streams of QoS 0 publishes, as fast as each socket takes them, while a
    subscriber to `#` never reads (so the broker holds each publisher, then drops, and is
    behind on all of them). The fullest receive queue of the broker's connections (bytes
    unread in the kernel, /proc/net/tcp), and the bytes sent."""
    import threading
    publishers, seconds = int(publishers), float(seconds)
    stalled = stalled_subscriber(host, port, "stalled", "#", 0)
    peaks = Peaks(pid, port)
    sent = [0] * publishers

    def run(i):
        sent[i] = stream_qos0(host, port, f"fast-{i}", f"fast/{i}", seconds)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(publishers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    peaks.finish()
    stalled.close()
    return {"receive_queue_bytes": peaks.receive_queue, "sent_bytes": sent}


@scenario
def nats_stalled_subscribers(host, port, pid, subs, count, size):
    """NATS: `subs` subscribers to `>` that never read; one publisher sends `count` × `size`
    bytes, then PING (its PONG: all was taken). The broker's peak RSS over its RSS before, and
    the peak of its connections' kernel send queues."""
    subs, count, size = int(subs), int(count), int(size)
    rss0 = rss_kib(pid)
    socks = []
    for i in range(subs):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect((host, int(port)))
        s.sendall(b'CONNECT {"verbose":false}\r\nSUB > 1\r\nPING\r\n')
        got = b""
        while b"PONG" not in got:
            data = s.recv(4096)
            if not data:
                raise AssertionError(f"subscriber {i} refused: {got!r}")
            got += data
        socks.append(s)
    time.sleep(0.5)
    peaks = Peaks(pid, port)
    p = socket.create_connection((host, int(port)), timeout=60)
    p.sendall(b'CONNECT {"verbose":false}\r\n')
    msg = f"PUB flood.t {size}\r\n".encode() + b"x" * size + b"\r\n"
    for _ in range(count):
        p.sendall(msg)
    p.sendall(b"PING\r\n")
    buf = b""
    while b"PONG" not in buf:
        data = p.recv(65536)
        if not data:
            break
        buf += data
    time.sleep(0.5)
    peaks.finish()
    p.close()
    for s in socks:
        s.close()
    return {"rss_kib": [rss0, peaks.rss_kib], "rss_growth_kib": peaks.rss_kib - rss0,
            "send_queue_bytes": peaks.send_queues}


def count_publishes(client, count, out, key, pause=0.0, every=1, idle=3.0):
    """Reads PUBLISHes until `count` arrived or none for `idle` seconds; with `pause`, sleeps
    that long every `every` messages (a subscriber slower than its publisher). The count goes
    to out."""
    n = 0
    while n < count:
        try:
            p = client.recv(idle)
        except (TimeoutError, OSError):
            break
        if p["type"] == 3:
            n += 1
            if pause and n % every == 0:
                time.sleep(pause)
    out[key] = n


@scenario
def slow_subscriber(host, port, pid, mode, count, size):
    """A fast subscriber and one slower than the publisher (`slow`: reads, 1 ms asleep every
    2 messages) or one that never reads (`never`); one publisher sends `count` × `size`
    bytes at QoS 0, then PINGREQ (its PINGRESP: every publish was taken). What each
    subscriber received, and the broker's RSS growth."""
    import threading
    count, size = int(count), int(size)
    rss0 = rss_kib(pid)
    got = {}
    fast = Client(host, int(port), v5=False, timeout=10)
    fast.connect("pace-fast")
    fast.subscribe(("pace/#", 0))
    # A 4 KiB receive buffer: the broker's queue for it fills (read below, or never).
    slow = stalled_subscriber(host, port, "pace-slow", "pace/#", 0)
    # The publisher may be held for `slow_subscriber_wait` (up to 5 s in the tests) and more
    # on a loaded machine, and nothing reaches the readers meanwhile: they wait longer than
    # that before giving up (3 s once cut the fast reader short during a 2 s hold).
    idle = 15.0
    readers = [threading.Thread(target=count_publishes,
                                args=(fast, count, got, "fast", 0.0, 1, idle))]
    if mode == "slow":
        readers.append(threading.Thread(target=count_publishes,
                                        args=(slow, count, got, "slow", 0.001, 2, idle)))
    elif mode != "never":
        raise AssertionError(f"mode {mode!r}: slow or never")
    for r in readers:
        r.start()
    peaks = Peaks(pid)
    started = time.monotonic()
    p = Client(host, int(port), v5=False, timeout=30)
    p.connect("pace-publisher")
    payload = b"x" * size
    for _ in range(count):
        p.publish("pace/t", payload, qos=0)
    p.ping()
    while p.recv(30)["type"] != PINGRESP:
        pass
    taken = time.monotonic() - started
    p.disconnect()
    for r in readers:
        r.join()
    peaks.finish()
    fast.close()
    slow.close()
    return {"fast": got["fast"], "slow": got.get("slow"), "publish_seconds": round(taken, 3),
            "rss_kib": [rss0, peaks.rss_kib], "rss_growth_kib": peaks.rss_kib - rss0}


def metric(port, name):
    """One sample of the broker's /metrics on 127.0.0.1:`port` (`name` with its labels), or
    None when it has none (an older build, for a before-and-after comparison)."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def large_publish(claim):
    """An MQTT 5 QoS 1 PUBLISH to `big` of `claim` bytes in all, fixed header included."""
    head = mstr("big") + b"\x00\x01" + b"\x00"
    rest = claim - 1 - 3  # a remaining length of 16 KiB to 2 MiB takes three bytes
    assert len(varint(rest)) == 3, claim
    return b"\x32" + varint(rest) + head + b"x" * (rest - len(head))


def large_pub(claim):
    """A NATS PUB to `big` with a payload of `claim` bytes."""
    return f"PUB big {claim}\r\n".encode() + b"x" * claim + b"\r\n"


class Half:
    """A logged-in client that sends all of a large packet but its last byte (or, `whole`,
    all of it), then waits."""

    def __init__(self, proto, host, port, i, claim, whole=False):
        self.proto = proto
        if proto == "mqtt":
            self.client = Client(host, int(port), v5=True, timeout=10)
            self.client.connect(f"half-{i}")
            self.sock = self.client.sock
            packet = large_publish(claim)
        else:
            self.sock = attacker(host, port, i, 1)
            self.sock.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
            got = b""
            while b"PONG" not in got:
                got += self.sock.recv(4096)
            packet = large_pub(claim)
        try:
            self.sock.sendall(packet if whole else packet[:-1])
        except OSError:
            pass  # refused and closed while sending

    def refusal(self):
        """None while the broker keeps the connection; once it closed it: the MQTT 5
        DISCONNECT reason code (0: none), or for NATS what it sent (an `-ERR` would be there)."""
        if self.proto == "mqtt":
            rc = 0
            try:
                while True:
                    p = self.client.recv(0.05)
                    if p["type"] == DISCONNECT:
                        rc = p["rc"]
            except Closed:
                return rc
            except TimeoutError:
                return None
        self.sock.settimeout(0.05)
        got = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return got.decode(errors="replace")
                got += data
        except socket.timeout:
            return None
        except OSError:
            return got.decode(errors="replace")

    def close(self):
        self.sock.close()


def device_sends(proto, host, port, packet):
    """A device on 127.0.0.1 sends `packet` whole (MQTT: a QoS 1 PUBLISH; NATS: a PUB,
    then PING): True when it is answered (PUBACK, PONG), else how the broker refused it."""
    if proto == "mqtt":
        c = Client(host, int(port), v5=True, timeout=10)
        c.connect(f"device-{time.monotonic_ns()}")
        try:
            c.send(packet)
            while True:
                p = c.recv(10)
                if p["type"] == PUBACK:
                    c.close()
                    return True
                if p["type"] == DISCONNECT:
                    c.close()
                    return f"DISCONNECT {p['rc']:#x}"
        except (Closed, OSError) as err:
            return f"closed: {err}"
    s = socket.create_connection((host, int(port)), timeout=10)
    got = b""
    try:
        s.sendall(b'CONNECT {"verbose":false}\r\n' + packet + b"PING\r\n")
        while b"PONG" not in got:
            data = s.recv(65536)
            if not data:
                return f"closed: {got!r}"
            got += data
    except OSError as err:
        return f"closed: {err}"
    finally:
        s.close()
    return True


def device_begins(proto, host, port, start):
    """A device on 127.0.0.1 logs in and sends `start`, the first 32 KiB of a large packet,
    then reads until the broker closes: the MQTT 5 DISCONNECT reason (`DISCONNECT 0x..`), or
    for NATS `closed` and what it sent; `open` if it keeps the connection for 3 s. (Only the
    start: a client still sending when the broker closes may get a reset that discards what
    the broker wrote before it.)"""
    if proto == "mqtt":
        c = Client(host, int(port), v5=True, timeout=10)
        c.connect(f"device-{time.monotonic_ns()}")
        c.send(start)
        try:
            rc = c.expect_closed(3)
        except AssertionError:
            c.close()
            return "open"
        return f"DISCONNECT {rc:#x}" if rc is not None else "closed"
    s = socket.create_connection((host, int(port)), timeout=3)
    s.sendall(b'CONNECT {"verbose":false}\r\n' + start)
    got = b""
    try:
        while data := s.recv(65536):
            got += data
    except socket.timeout:
        s.close()
        return "open"
    except OSError:
        pass
    s.close()
    return f"closed: {got!r}"


@scenario
def half_sent_packets(host, port, pid, proto, count, claim, metrics_port):
    """`count` logged-in clients each send a large packet of `claim` bytes (MQTT: the whole
    PUBLISH; NATS: the payload) but its last byte, and wait. Then: the broker's RSS, the
    bytes it leased for them and the refusals (/metrics), how each attacker was refused; a
    device's small publish and, while they hold the pool, its large one; and once they are
    gone, the lease count and the device's large publish again."""
    count, claim = int(count), int(claim)
    label = f'{{protocol="{proto}"}}'
    rss0 = rss_kib(pid)
    peaks = Peaks(pid)
    half = [Half(proto, host, port, i, claim) for i in range(count)]
    time.sleep(0.5)
    refusals = [h.refusal() for h in half]
    peaks.finish()
    large = large_publish(claim) if proto == "mqtt" else large_pub(claim)
    if proto == "mqtt":
        small = b"\x32" + varint(len(mstr("small")) + 3 + 5) + mstr("small") + b"\x00\x02\x00" + b"hello"
    else:
        small = b"PUB small 5\r\nhello\r\n"
    out = {
        "rss_kib": [rss0, peaks.rss_kib],
        "rss_growth_kib": peaks.rss_kib - rss0,
        "leased_during": metric(metrics_port, "edge_partial_packet_bytes" + label),
        "refused": metric(metrics_port, "edge_partial_packets_refused_total" + label),
        "open_during": sum(r is None for r in refusals),
        "refusals": sorted({str(r) for r in refusals if r is not None}),
        "device_small": device_sends(proto, host, port, small),
        "device_large_while_full": device_begins(proto, host, port, large[:32 << 10]),
    }
    for h in half:
        h.close()
    time.sleep(0.5)
    out["leased_after"] = metric(metrics_port, "edge_partial_packet_bytes" + label)
    out["device_large_after"] = device_sends(proto, host, port, large)
    return out


def stored_until_full(proto, host, port, claim):
    """Routed publishes of `claim` bytes (MQTT: whole QoS 1 PUBLISHes; NATS: PUB payloads)
    from one client, each answered (PUBACK; NATS: the PONG after it) before the next, until
    one is not answered within 2 s: the log is full and holds it. How many were answered, and
    the client, left open (its last publish still held)."""
    if proto == "mqtt":
        c = Client(host, int(port), v5=True, timeout=10)
        c.connect("filler")
        for n in range(64):
            c.send(large_publish(claim))
            try:
                while c.recv(2)["type"] != PUBACK:
                    pass
            except TimeoutError:
                return n, c.sock
        raise AssertionError("the log never filled")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b'CONNECT {"verbose":false}\r\n')
    s.settimeout(2)
    for n in range(64):
        s.sendall(large_pub(claim) + b"PING\r\n")
        got = b""
        try:
            while b"PONG" not in got:
                got += s.recv(4096)
        except socket.timeout:
            return n, s
    raise AssertionError("the log never filled")


@scenario
def held_for_the_log(host, port, pid, proto, count, claim, metrics_port):
    """A full log (the broker's `when_full = "block"`) holds a client's routed publish of
    `claim` bytes; then `count` more clients each send one whole. The broker's RSS, the bytes
    leased (/metrics) and how many of them it kept."""
    count, claim = int(count), int(claim)
    label = f'{{protocol="{proto}"}}'
    stored, filler = stored_until_full(proto, host, port, claim)
    rss0 = rss_kib(pid)
    peaks = Peaks(pid)
    senders = [Half(proto, host, port, i, claim, whole=True) for i in range(count)]
    time.sleep(1)
    refusals = [h.refusal() for h in senders]
    peaks.finish()
    out = {
        "stored_before_full": stored,
        "rss_kib": [rss0, peaks.rss_kib],
        "rss_growth_kib": peaks.rss_kib - rss0,
        "leased": metric(metrics_port, "edge_partial_packet_bytes" + label),
        "refused": metric(metrics_port, "edge_partial_packets_refused_total" + label),
        "open": sum(r is None for r in refusals),
    }
    for h in senders:
        h.close()
    filler.close()
    return out


@scenario
def small_publishes_held(host, port, pid, proto, clients, size, seconds="6"):
    """`clients` clients stream routed publishes of `size` bytes (MQTT QoS 0; NATS PUBs) as
    fast as their sockets take them, for `seconds`: they fill the log (`when_full = "block"`,
    an uplink that never reads) and each connection is left holding the batch it read last.
    The RSS the broker grew by per client, and the publishes it took."""
    clients, size, seconds = int(clients), int(size), float(seconds)
    rss0 = rss_kib(pid)
    streams = []
    for i in range(clients):
        if proto == "mqtt":
            c = Client(host, int(port), v5=False, timeout=10)
            c.connect(f"small-{i}")
            body = mstr("big") + b"y" * size
            packet, s = b"\x30" + varint(len(body)) + body, c.sock
        else:
            # Logged in before the next connects (PONG): connections from one address that
            # have not are evicted beyond max_pending_per_source.
            s = attacker(host, port, i, 1)
            s.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
            got = b""
            while b"PONG" not in got:
                got += s.recv(4096)
            packet = f"PUB big {size}\r\n".encode() + b"y" * size + b"\r\n"
        s.setblocking(False)
        streams.append((s, packet * ((64 << 10) // len(packet))))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        moved = False
        for s, data in streams:
            try:
                moved |= s.send(data) > 0
            except BlockingIOError:
                pass
        if not moved:
            time.sleep(0.01)
    time.sleep(1)
    growth = rss_kib(pid) - rss0
    for s, _ in streams:
        s.close()
    return {"clients": clients, "rss_growth_kib": growth,
            "per_client_kib": round(growth / clients, 1)}

def main():
    name, host, port, pid, *args = sys.argv[1:]
    try:
        out = SCENARIOS[name](host, port, pid, *args)
    except AssertionError as err:
        print(f"{name}: {err}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
