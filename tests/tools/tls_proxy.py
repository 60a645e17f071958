#!/usr/bin/env python3
"""A TLS-terminating TCP proxy (Python's ssl module, i.e. OpenSSL), like stunnel in front of a
broker: accepts TLS on 127.0.0.1:LISTEN_PORT with CERT/KEY and forwards the plaintext to
TARGET (host:port). With --client-ca, clients must present a certificate from that CA.

Prints "READY <port>" once listening. Usage:
  tls_proxy.py --cert server.crt --key server.key --target 127.0.0.1:9092 [--port 0]
               [--client-ca ca.crt]
"""
import argparse
import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--client-ca")
    args = ap.parse_args()
    host, port = args.target.rsplit(":", 1)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    if args.client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(args.client_ca)

    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, upstream_writer),
                             pipe(upstream_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", args.port, ssl=ctx)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
