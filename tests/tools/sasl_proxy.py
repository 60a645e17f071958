#!/usr/bin/env python3
"""A test-only SASL-terminating Kafka proxy in front of Tansu (tests/tests/kafka_sasl.rs).

Why: Tansu 0.6.0 (the Kafka broker these tests can run) answers SaslHandshake with
UNSUPPORTED_SASL_MECHANISM unless started with --authentication; with it, it offers only the
SCRAM mechanisms (no PLAIN, no OAUTHBEARER) and `tansu user create` cannot reach it (the admin
request itself is refused as unauthenticated), and users created on a broker without
--authentication were not found after restarting it with the flag (librdkafka: unknown-user).
So SASL is terminated here, and everything after it is relayed to a Tansu without
authentication. The proxy is verified first against librdkafka (confluent-kafka) as an
independent client.

What it does, per client connection, like a Kafka broker:
- ApiVersions is relayed to Tansu (which lists SaslHandshake and SaslAuthenticate);
- SaslHandshake v0/v1 offers PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER;
- SaslAuthenticate v0..v2 runs the mechanism: SCRAM's server side is PyPI `scramp`; PLAIN and
  OAUTHBEARER are checked against the credentials file, read again at every authentication
  (so a test can change a password while the broker runs);
- any other request before authentication closes the connection; a failed authentication is
  answered with SASL_AUTHENTICATION_FAILED (58) and the connection is closed;
- with --lifetime-ms, SaslAuthenticate v1+ announces session_lifetime_ms (KIP-368); a request
  after the session expired closes the connection, as Kafka does; a re-authentication on the
  same connection renews it and is counted.

Credentials file (JSON): {"users": {"NAME": "PASSWORD", ...}, "tokens": ["TOKEN", ...]}.
Counters are written as JSON to --stats after every authentication:
{"ok": N, "failed": N, "reauthenticated": N, "expired": N, "by_mechanism": {...}}.
Prints "READY PORT" once it listens.
"""
import argparse
import asyncio
import json
import struct
import time

from scramp import ScramException, ScramMechanism

SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS = 17, 36, 18
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
AUTH_FAILED = 58

stats = {"ok": 0, "failed": 0, "reauthenticated": 0, "expired": 0, "by_mechanism": {}}


def save_stats(path):
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(stats, f)
        import os
        os.replace(path + ".tmp", path)


def uvarint(data, at):
    shift = value = 0
    while True:
        b = data[at]
        at += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, at
        shift += 7


def enc_uvarint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def parse_header(frame):
    """api_key, api_version, correlation_id, offset of the body."""
    key, version, corr = struct.unpack(">hhi", frame[:8])
    n = struct.unpack(">h", frame[8:10])[0]
    at = 10 + max(n, 0)
    flexible = (key == SASL_AUTHENTICATE and version >= 2)
    if flexible:
        tags, at = uvarint(frame, at)
        for _ in range(tags):
            _, at = uvarint(frame, at)
            size, at = uvarint(frame, at)
            at += size
    return key, version, corr, at


def read_auth_bytes(frame, at, version):
    if version >= 2:
        n, at = uvarint(frame, at)
        return frame[at:at + n - 1]
    n = struct.unpack(">i", frame[at:at + 4])[0]
    return frame[at + 4:at + 4 + n]


def handshake_response(corr, error, mechanisms):
    body = struct.pack(">hi", error, len(mechanisms))
    for m in mechanisms:
        body += struct.pack(">h", len(m)) + m.encode()
    return struct.pack(">i", corr) + body


def authenticate_response(corr, version, error, message, auth_bytes, lifetime_ms):
    if version >= 2:
        out = struct.pack(">i", corr) + b"\x00"  # header v1: no tagged fields
        out += struct.pack(">h", error)
        if message is None:
            out += b"\x00"
        else:
            m = message.encode()
            out += enc_uvarint(len(m) + 1) + m
        out += enc_uvarint(len(auth_bytes) + 1) + auth_bytes
        out += struct.pack(">q", lifetime_ms) + b"\x00"
        return out
    out = struct.pack(">ih", corr, error)
    if message is None:
        out += struct.pack(">h", -1)
    else:
        m = message.encode()
        out += struct.pack(">h", len(m)) + m
    out += struct.pack(">i", len(auth_bytes)) + auth_bytes
    if version >= 1:
        out += struct.pack(">q", lifetime_ms)
    return out


async def read_frame(reader):
    head = await reader.readexactly(4)
    n = struct.unpack(">i", head)[0]
    return await reader.readexactly(n)


def write_frame(writer, payload):
    writer.write(struct.pack(">i", len(payload)) + payload)


class Session:
    """One client connection's SASL state."""

    def __init__(self, args):
        self.args = args
        self.mechanism = None
        self.scram = None
        self.authenticated_once = False
        self.expires = None

    def credentials(self):
        with open(self.args.credentials) as f:
            return json.load(f)

    def step(self, auth_bytes):
        """Returns (done, ok, reply bytes, error message)."""
        creds = self.credentials()
        if self.mechanism == "PLAIN":
            parts = auth_bytes.split(b"\x00")
            if len(parts) != 3:
                return True, False, b"", "malformed PLAIN message"
            user, password = parts[1].decode(), parts[2].decode()
            ok = creds.get("users", {}).get(user) == password
            return True, ok, b"", None if ok else "Invalid username or password"
        if self.mechanism == "OAUTHBEARER":
            text = auth_bytes.decode(errors="replace")
            token = None
            for kv in text.split("\x01"):
                if kv.startswith("auth=Bearer "):
                    token = kv[len("auth=Bearer "):]
            ok = token is not None and token in creds.get("tokens", [])
            return True, ok, b"", None if ok else "invalid_token"
        # SCRAM
        if self.scram is None:
            mech = ScramMechanism(self.mechanism)
            users = creds.get("users", {})

            def auth_fn(name):
                if name not in users:
                    raise ScramException("unknown-user")
                return mech.make_auth_info(users[name], iteration_count=4096)

            self.scram = mech.make_server(auth_fn)
            try:
                self.scram.set_client_first(auth_bytes.decode())
            except ScramException as e:
                return True, False, b"", f"SCRAM: {e}"
            return False, True, self.scram.get_server_first().encode(), None
        try:
            self.scram.set_client_final(auth_bytes.decode())
        except ScramException as e:
            return True, False, b"", f"SCRAM: {e}"
        return True, True, self.scram.get_server_final().encode(), None


async def handle(client_reader, client_writer, args):
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", args.upstream)
    session = Session(args)
    authenticated = False
    try:
        while True:
            frame = await read_frame(client_reader)
            key, version, corr, at = parse_header(frame)
            if key == SASL_HANDSHAKE:
                n = struct.unpack(">h", frame[at:at + 2])[0]
                mech = frame[at + 2:at + 2 + n].decode()
                ok = mech in MECHANISMS
                session.mechanism = mech if ok else None
                session.scram = None
                write_frame(client_writer, handshake_response(corr, 0 if ok else 33, MECHANISMS))
                await client_writer.drain()
                continue
            if key == SASL_AUTHENTICATE:
                if session.mechanism is None:
                    return
                done, ok, reply, error = session.step(read_auth_bytes(frame, at, version))
                lifetime = args.lifetime_ms if (done and ok) else 0
                if done:
                    stats["ok" if ok else "failed"] += 1
                    by = stats["by_mechanism"].setdefault(session.mechanism, 0)
                    stats["by_mechanism"][session.mechanism] = by + (1 if ok else 0)
                    if ok and session.authenticated_once:
                        stats["reauthenticated"] += 1
                    save_stats(args.stats)
                write_frame(client_writer, authenticate_response(
                    corr, version, 0 if ok else AUTH_FAILED,
                    None if ok else f"Authentication failed: {error}", reply, lifetime))
                await client_writer.drain()
                if done and not ok:
                    return
                if done and ok:
                    authenticated = True
                    session.authenticated_once = True
                    session.scram = None
                    session.expires = (time.monotonic() + lifetime / 1000) if lifetime else None
                continue
            if key != API_VERSIONS and not authenticated:
                return  # Kafka closes a connection that skips authentication
            if session.expires is not None and time.monotonic() > session.expires:
                stats["expired"] += 1
                save_stats(args.stats)
                return  # KIP-368: the session expired without re-authentication
            write_frame(up_writer, frame)
            await up_writer.drain()
            write_frame(client_writer, await read_frame(up_reader))
            await client_writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        for w in (client_writer, up_writer):
            try:
                w.close()
            except Exception:  # noqa: BLE001
                pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", type=int, required=True, help="Tansu's port on 127.0.0.1")
    ap.add_argument("--credentials", required=True)
    ap.add_argument("--lifetime-ms", type=int, default=0)
    ap.add_argument("--stats")
    args = ap.parse_args()
    save_stats(args.stats)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args), "127.0.0.1", args.port)
    print(f"READY {args.port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
