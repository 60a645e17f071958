"""A minimal raw-socket MQTT 3.1.1/5 client for conformance tests.

paho acknowledges everything by itself and hides reason codes of DISCONNECT; this client sends
exactly the bytes a test asks for (no PUBACK unless asked, DUP flags, malformed packets) and
decodes what the broker answers into plain dicts.
"""
import socket
import struct
import time

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = (
    8, 9, 10, 11, 12, 13, 14, 15)

# property id -> (name, kind)
PROPS = {
    0x01: ("payload_format", "byte"), 0x02: ("message_expiry", "u32"),
    0x03: ("content_type", "str"), 0x08: ("response_topic", "str"),
    0x09: ("correlation_data", "bin"), 0x0B: ("subscription_id", "varint"),
    0x11: ("session_expiry", "u32"), 0x12: ("assigned_client_id", "str"),
    0x13: ("server_keep_alive", "u16"), 0x15: ("auth_method", "str"),
    0x16: ("auth_data", "bin"), 0x17: ("request_problem_info", "byte"),
    0x18: ("will_delay", "u32"), 0x19: ("request_response_info", "byte"),
    0x1A: ("response_info", "str"), 0x1C: ("server_reference", "str"),
    0x1F: ("reason_string", "str"), 0x21: ("receive_maximum", "u16"),
    0x22: ("topic_alias_maximum", "u16"), 0x23: ("topic_alias", "u16"),
    0x24: ("maximum_qos", "byte"), 0x25: ("retain_available", "byte"),
    0x26: ("user_property", "pair"), 0x27: ("maximum_packet_size", "u32"),
    0x28: ("wildcard_available", "byte"), 0x29: ("sub_ids_available", "byte"),
    0x2A: ("shared_available", "byte"),
}
BY_NAME = {name: (pid, kind) for pid, (name, kind) in PROPS.items()}
MULTI = {"user_property", "subscription_id"}


class Closed(Exception):
    """The broker closed the connection."""


def varint(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def mstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def props(p):
    """Encodes a dict of properties (lists for user_property / subscription_id)."""
    out = bytearray()
    for name, value in (p or {}).items():
        pid, kind = BY_NAME[name]
        values = value if name in MULTI and isinstance(value, list) else [value]
        for v in values:
            out.append(pid)
            if kind == "byte":
                out.append(v)
            elif kind == "u16":
                out += struct.pack(">H", v)
            elif kind == "u32":
                out += struct.pack(">I", v)
            elif kind == "varint":
                out += varint(v)
            elif kind in ("str", "bin"):
                out += mstr(v)
            elif kind == "pair":
                out += mstr(v[0]) + mstr(v[1])
    return varint(len(out)) + bytes(out)


def frame(first, body):
    return bytes([first]) + varint(len(body)) + body


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        chunk = self.data[self.pos:self.pos + n]
        if len(chunk) != n:
            raise ValueError("truncated packet from broker")
        self.pos += n
        return chunk

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def varint(self):
        mult, value = 1, 0
        while True:
            byte = self.u8()
            value += (byte & 0x7F) * mult
            if not byte & 0x80:
                return value
            mult *= 128

    def string(self):
        return self.take(self.u16()).decode()

    def binary(self):
        return self.take(self.u16())

    def rest(self):
        return self.data[self.pos:]

    def left(self):
        return len(self.data) - self.pos

    def properties(self):
        end = self.varint() + self.pos
        out = {}
        while self.pos < end:
            name, kind = PROPS[self.varint()]
            if kind == "byte":
                v = self.u8()
            elif kind == "u16":
                v = self.u16()
            elif kind == "u32":
                v = self.u32()
            elif kind == "varint":
                v = self.varint()
            elif kind == "str":
                v = self.string()
            elif kind == "bin":
                v = self.binary().hex()
            else:
                v = [self.string(), self.string()]
            if name in MULTI:
                out.setdefault(name, []).append(v)
            else:
                out[name] = v
        return out


class Client:
    """One raw MQTT connection. `v5` picks the protocol version."""

    def __init__(self, host, port, v5=True, timeout=5.0):
        self.v5 = v5
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.next_id = 0
        self.aliases = {}

    # ---- sending -------------------------------------------------------------------------
    def send(self, data):
        """Sends `data` within the connection's `timeout` (receiving leaves the socket with
        what was left of its own deadline)."""
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def connect(self, client_id="", clean=True, keepalive=60, props_=None, will=None,
                username=None, password=None, expect_ok=True):
        flags = 0x02 if clean else 0
        payload = mstr(client_id)
        if will:
            flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
            if self.v5:
                payload += props(will.get("props"))
            payload += mstr(will["topic"]) + mstr(will["payload"])
        if username is not None:
            flags |= 0x80
            payload += mstr(username)
        if password is not None:
            flags |= 0x40
            payload += mstr(password)
        body = mstr("MQTT") + bytes([5 if self.v5 else 4, flags]) + struct.pack(">H", keepalive)
        if self.v5:
            body += props(props_)
        self.send(frame(0x10, body + payload))
        ack = self.recv()
        if ack["type"] != CONNACK:
            raise AssertionError(f"expected CONNACK, got {ack}")
        if expect_ok and ack["rc"] != 0:
            raise AssertionError(f"CONNECT refused: {ack}")
        return ack

    def packet_id(self):
        self.next_id = self.next_id % 65535 + 1
        return self.next_id

    def publish(self, topic, payload, qos=0, retain=False, dup=False, packet_id=None,
                props_=None):
        first = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
        payload = payload.encode() if isinstance(payload, str) else payload
        body = mstr(topic)
        if qos:
            packet_id = packet_id or self.packet_id()
            body += struct.pack(">H", packet_id)
        if self.v5:
            body += props(props_)
        self.send(frame(first, body + payload))
        return packet_id

    def ack(self, ptype, packet_id, rc=None):
        first = {PUBACK: 0x40, PUBREC: 0x50, PUBREL: 0x62, PUBCOMP: 0x70}[ptype]
        body = struct.pack(">H", packet_id)
        if rc is not None:
            body += bytes([rc])
        self.send(frame(first, body))

    def subscribe(self, *filters, sub_id=None, expect=None):
        """filters: (filter, qos) or (filter, options byte); returns the SUBACK codes."""
        packet_id = self.packet_id()
        body = struct.pack(">H", packet_id)
        if self.v5:
            body += props({"subscription_id": sub_id} if sub_id else None)
        for f, options in filters:
            body += mstr(f) + bytes([options])
        self.send(frame(0x82, body))
        ack = self.recv()
        if ack["type"] != SUBACK or ack["packet_id"] != packet_id:
            raise AssertionError(f"expected SUBACK {packet_id}, got {ack}")
        return ack["codes"]

    def unsubscribe(self, *filters):
        packet_id = self.packet_id()
        body = struct.pack(">H", packet_id) + (props(None) if self.v5 else b"")
        for f in filters:
            body += mstr(f)
        self.send(frame(0xA2, body))
        ack = self.recv()
        if ack["type"] != UNSUBACK:
            raise AssertionError(f"expected UNSUBACK, got {ack}")
        return ack.get("codes")

    def ping(self):
        self.send(b"\xc0\x00")

    def disconnect(self, rc=0, props_=None):
        if self.v5 and (rc or props_):
            self.send(frame(0xE0, bytes([rc]) + props(props_)))
        else:
            self.send(b"\xe0\x00")
        self.sock.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- receiving -----------------------------------------------------------------------
    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError from None
        except (ConnectionResetError, BrokenPipeError) as err:
            raise Closed(str(err)) from None
        if not data:
            raise Closed("EOF")
        self.buf += data

    def recv(self, timeout=5.0):
        """The next packet as a dict; TimeoutError if none, Closed if the broker closed."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                mult, length, i = 1, 0, 1
                complete = False
                while i < len(self.buf) and i <= 4:
                    byte = self.buf[i]
                    length += (byte & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not byte & 0x80:
                        complete = True
                        break
                if complete and len(self.buf) >= i + length:
                    first, body = self.buf[0], self.buf[i:i + length]
                    self.buf = self.buf[i + length:]
                    return self._decode(first, body)
            self._fill(deadline)

    def recv_or_none(self, timeout):
        try:
            return self.recv(timeout)
        except TimeoutError:
            return None

    def expect_closed(self, timeout=5.0):
        """Reads until the broker closes; returns the v5 DISCONNECT reason code seen (or None)."""
        deadline = time.monotonic() + timeout
        rc = None
        while True:
            try:
                p = self.recv(max(0.01, deadline - time.monotonic()))
            except Closed:
                return rc
            except TimeoutError:
                raise AssertionError("the broker did not close the connection") from None
            if p["type"] == DISCONNECT:
                rc = p["rc"]

    def _decode(self, first, body):
        ptype = first >> 4
        r = Reader(body)
        p = {"type": ptype}
        if ptype == CONNACK:
            p["session_present"] = bool(r.u8() & 1)
            p["rc"] = r.u8()
            p["props"] = r.properties() if self.v5 and r.left() else {}
        elif ptype == PUBLISH:
            qos = (first >> 1) & 3
            p.update(qos=qos, dup=bool(first & 8), retain=bool(first & 1))
            p["topic"] = r.string()
            if qos:
                p["packet_id"] = r.u16()
            p["props"] = r.properties() if self.v5 else {}
            alias = p["props"].get("topic_alias")
            if alias is not None:
                if p["topic"]:
                    self.aliases[alias] = p["topic"]
                else:
                    p["topic"] = self.aliases[alias]
            p["payload"] = r.rest()
        elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, SUBACK):
            p["packet_id"] = r.u16()
            if ptype in (SUBACK, UNSUBACK):
                if self.v5:
                    p["props"] = r.properties()
                p["codes"] = list(r.rest())
            else:
                p["rc"] = r.u8() if r.left() else 0
                p["props"] = r.properties() if r.left() else {}
        elif ptype == DISCONNECT:
            p["rc"] = r.u8() if r.left() else 0
            p["props"] = r.properties() if r.left() else {}
        return p

    def messages(self, timeout, count=None, auto_ack=True):
        """Collects PUBLISH packets until `count` arrived or `timeout` passed quietly."""
        out = []
        deadline = time.monotonic() + timeout
        while count is None or len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            p = self.recv_or_none(left)
            if p is None:
                break
            if p["type"] == PUBLISH:
                out.append(p)
                if auto_ack and p["qos"] == 1:
                    self.ack(PUBACK, p["packet_id"])
                elif auto_ack and p["qos"] == 2:
                    self.ack(PUBREC, p["packet_id"])
            elif p["type"] == PUBREL and auto_ack:
                self.ack(PUBCOMP, p["packet_id"])
        return out
