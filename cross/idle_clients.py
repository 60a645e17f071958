#!/usr/bin/env python3
"""Hold N idle MQTT 3.1.1 (or NATS) connections open against a broker (footprint measurements).

Opens N TCP connections to HOST:PORT, sends CONNECT (clean session, keep alive 0 = no pings
unless --keepalive, client id PREFIX-i) on each and waits for a successful CONNACK. Then prints "ready N" on stdout
and keeps the connections open (sending nothing) until SIGTERM or SIGINT. Standard library only.
With --nats: reads INFO, sends `CONNECT {...}` and PING, waits for PONG, then is silent too
(the broker's PINGs go unanswered, so hold them for less than ping_interval × max_pings_out).

Usage: idle_clients.py --port 1883 [--host 127.0.0.1] [--count 1000] [--prefix idle] [--nats]
                       [--keepalive SECS]  (announced, never kept: choose more than the run lasts)
Exit status 1 if a connection is refused or a CONNACK is not 0 (the reason is printed).
"""
import argparse
import resource
import signal
import socket
import struct
import sys


def connect_packet(client_id: str, keepalive: int = 0) -> bytes:
    cid = client_id.encode()
    # variable header: protocol name "MQTT", level 4, flags 0x02 (clean session), keep alive
    body = struct.pack("!H4sBBH", 4, b"MQTT", 4, 0x02, keepalive) + struct.pack("!H", len(cid)) + cid
    assert len(body) < 128  # one-byte remaining length
    return bytes([0x10, len(body)]) + body


def read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed before CONNACK")
        data += chunk
    return data


def read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("connection closed during the NATS handshake")
        data += chunk
    return data


def nats_login(sock: socket.socket, name: str) -> str:
    """INFO, CONNECT, PING -> PONG; an error line, if any."""
    if not read_line(sock).startswith(b"INFO "):
        return "no INFO"
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"%s"}\r\nPING\r\n' % name.encode())
    line = read_line(sock)
    return "" if line == b"PONG\r\n" else line.decode(errors="replace").strip()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--prefix", default="idle")
    ap.add_argument("--nats", action="store_true", help="NATS client protocol instead of MQTT")
    ap.add_argument("--keepalive", type=int, default=0, help="MQTT keep alive announced (s), 0-65535")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    socks = []
    for i in range(args.count):
        s = socket.create_connection((args.host, args.port), timeout=10)
        if args.nats:
            refused = nats_login(s, f"{args.prefix}-{i}")
            if refused:
                print(f"client {i}: {refused} (refused)", file=sys.stderr)
                return 1
            socks.append(s)
            continue
        s.sendall(connect_packet(f"{args.prefix}-{i}", args.keepalive))
        connack = read_exact(s, 4)
        if connack[0] != 0x20 or connack[3] != 0:
            print(f"client {i}: CONNACK {connack.hex()} (refused)", file=sys.stderr)
            return 1
        socks.append(s)
    print(f"ready {len(socks)}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
