#!/usr/bin/env python3
"""nats-py scenarios for the edge-broker NATS end-to-end tests.

Each scenario connects to --url, does its work and prints ONE JSON object on stdout with what
it observed; the Rust test asserts on it. Exit code non-zero on unexpected exceptions.

  nats_client.py pubsub  --url nats://127.0.0.1:PORT
  nats_client.py queue   --url ... [--messages 30]
  nats_client.py js      --url ... --subject sensors.a.temp [--count 10] [--msg-id-prefix X]
  nats_client.py crash   --url ... --subject S --acked FILE   (js.publish until the server dies)
  nats_client.py sub     --url ... --subject S --count N      (print what arrives)
  nats_client.py pub     --url ... --subject S --payload P
  nats_client.py sys     --url ...   (publish into $SYS: the errors, what arrived, still connected?)
Every scenario takes --tls-ca CA to connect over TLS (the server announces tls_required).
"""
import argparse
import asyncio
import json
import sys

import nats
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout
from nats.js.errors import APIError


TLS_CA = None  # --tls-ca: connect over TLS, trusting this CA file


async def connect(url, **kw):
    if TLS_CA:
        import ssl
        kw["tls"] = ssl.create_default_context(cafile=TLS_CA)
    return await nats.connect(url, allow_reconnect=False, connect_timeout=5, **kw)


async def pubsub(args):
    nc = await connect(args.url)
    got = {"exact": [], "star": [], "gt": [], "headers": None}

    def on(kind):
        async def cb(msg):
            got[kind].append(msg.subject)
        return cb

    await nc.subscribe("a.b", cb=on("exact"))
    await nc.subscribe("a.*", cb=on("star"))
    await nc.subscribe("a.>", cb=on("gt"))
    hdr_future = asyncio.get_running_loop().create_future()

    async def on_hdr(msg):
        if not hdr_future.done():
            hdr_future.set_result((dict(msg.headers or {}), msg.data.decode()))

    await nc.subscribe("h.x", cb=on_hdr)

    async def responder(msg):
        await msg.respond(b"pong:" + msg.data)

    await nc.subscribe("svc.echo", cb=responder)
    await nc.flush()
    for subject in ["a.b", "a.c", "a.b.c", "b.a", "a"]:
        await nc.publish(subject, b"x")
    await nc.publish("h.x", b"with-headers", headers={"K1": "v1", "Trace": "t-9"})
    await nc.flush()
    reply = await nc.request("svc.echo", b"ping", timeout=5)
    no_responders = False
    try:
        await nc.request("nobody.home", b"?", timeout=2)
    except NoRespondersError:
        no_responders = True
    except NatsTimeout:
        no_responders = False
    headers, body = await asyncio.wait_for(hdr_future, 5)
    await asyncio.sleep(0.2)
    got["headers"] = headers
    got["header_body"] = body
    got["reply"] = reply.data.decode()
    got["no_responders"] = no_responders
    for k in ("exact", "star", "gt"):
        got[k].sort()
    await nc.close()
    print(json.dumps(got))


async def queue(args):
    subs = []
    counts = {"w0": 0, "w1": 0, "w2": 0, "plain": 0}
    conns = []
    for i in range(3):
        nc = await connect(args.url)
        conns.append(nc)

        def cb_for(name):
            async def cb(msg):
                counts[name] += 1
            return cb

        subs.append(await nc.subscribe("jobs.new", queue="workers", cb=cb_for(f"w{i}")))
        await nc.flush()
    obs = await connect(args.url)
    conns.append(obs)

    async def plain(msg):
        counts["plain"] += 1

    await obs.subscribe("jobs.*", cb=plain)
    await obs.flush()
    pub = await connect(args.url)
    for i in range(args.messages):
        await pub.publish("jobs.new", str(i).encode())
    await pub.flush()
    # UNSUB with max: a subscription that leaves after 3 messages.
    limited = []

    async def lim(msg):
        limited.append(msg.data)

    s = await pub.subscribe("lim.x", cb=lim)
    await s.unsubscribe(limit=3)
    await pub.flush()
    for i in range(10):
        await pub.publish("lim.x", b"m")
    await pub.flush()
    for _ in range(50):
        if sum(counts[f"w{i}"] for i in range(3)) >= args.messages and counts["plain"] >= args.messages:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    for nc in conns + [pub]:
        await nc.close()
    workers = sorted(counts[f"w{i}"] for i in range(3))
    print(json.dumps({"workers_total": sum(workers), "workers": workers,
                      "workers_used": sum(1 for w in workers if w > 0),
                      "plain": counts["plain"], "limited": len(limited)}))


async def js_scenario(args):
    nc = await connect(args.url)
    js = nc.jetstream()
    acks = []
    for i in range(args.count):
        headers = None
        if args.msg_id_prefix:
            headers = {"Nats-Msg-Id": f"{args.msg_id_prefix}-{i}"}
        ack = await js.publish(args.subject, f"event-{i}".encode(), headers=headers, timeout=10)
        acks.append({"stream": ack.stream, "seq": ack.seq, "duplicate": bool(ack.duplicate)})
    error = None
    if args.expect_error_stream:
        try:
            await js.publish(args.subject, b"x", stream=args.expect_error_stream, timeout=10)
        except APIError as e:
            error = {"code": e.code, "description": e.description}
    await nc.close()
    print(json.dumps({"acks": acks, "error": error}))


async def ordered(args):
    """js.publish_async with many in flight: acks must carry strictly increasing seqs."""
    nc = await connect(args.url)
    js = nc.jetstream(publish_async_max_pending=1000)
    futures = []
    for i in range(args.count):
        futures.append(await js.publish_async(args.subject, f"o-{i}".encode()))
    acks = await asyncio.gather(*futures)
    seqs = [a.seq for a in acks]
    overtaken = sum(1 for a, b in zip(seqs, seqs[1:]) if b <= a)
    await nc.close()
    print(json.dumps({"count": len(seqs), "first": seqs[0], "last": seqs[-1],
                      "overtaken": overtaken}))


async def fill(args):
    """js.publish until the server answers with an API error; report it."""
    nc = await connect(args.url)
    js = nc.jetstream()
    acked = 0
    error = None
    for i in range(args.count):
        try:
            await js.publish(args.subject, b"f" * 300, timeout=10)
            acked += 1
        except APIError as e:
            error = {"code": e.code, "description": e.description, "type": type(e).__name__}
            break
    await nc.close()
    print(json.dumps({"acked": acked, "error": error}))


async def crash(args):
    nc = await connect(args.url)
    js = nc.jetstream()
    out = open(args.acked, "w")
    n = 0
    in_flight = set()
    stop = asyncio.Event()

    async def one(i):
        try:
            ack = await js.publish(args.subject, f"crash-{i}".encode(), timeout=5)
        except Exception:
            stop.set()
            return
        out.write(f"{ack.seq} crash-{i}\n")
        out.flush()

    while not stop.is_set() and n < args.count:
        while len(in_flight) >= 64:
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            in_flight -= done
        t = asyncio.ensure_future(one(n))
        in_flight.add(t)
        n += 1
        if n == 200:
            print("STARTED", flush=True)
    if in_flight:
        await asyncio.wait(in_flight)
    out.close()
    try:
        await nc.close()
    except Exception:
        pass
    print(json.dumps({"sent": n}))


async def sub(args):
    nc = await connect(args.url)
    got = []
    fut = asyncio.get_running_loop().create_future()

    async def cb(msg):
        got.append({"subject": msg.subject, "data": msg.data.decode(errors="replace"),
                    "headers": dict(msg.headers or {})})
        if len(got) >= args.count and not fut.done():
            fut.set_result(True)

    await nc.subscribe(args.subject, cb=cb)
    await nc.flush()
    print("READY", flush=True)
    try:
        await asyncio.wait_for(fut, args.timeout)
    except asyncio.TimeoutError:
        pass
    await nc.close()
    print(json.dumps({"messages": got}), flush=True)


async def pub(args):
    nc = await connect(args.url)
    headers = {"Src": "nats-py"} if args.headers else None
    await nc.publish(args.subject, args.payload.encode(), headers=headers)
    await nc.flush()
    await nc.close()
    print(json.dumps({"ok": True}))


async def sys_publish(args):
    errors = []

    async def on_error(err):
        errors.append(str(err))

    nc = await connect(args.url, error_cb=on_error)
    got = []

    async def on_msg(msg):
        got.append(msg.subject)

    await nc.subscribe("$SYS.>", cb=on_msg)
    await nc.subscribe("$JS.API.>", cb=on_msg)
    await nc.flush()
    await nc.publish("$SYS.REQ.SERVER.PING", b"x")
    await nc.publish("$JS.API.INFO", b"y")
    await nc.flush()
    await asyncio.sleep(0.5)
    connected = nc.is_connected
    await nc.close()
    print(json.dumps({"errors": errors, "received": got, "connected": connected}), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario")
    p.add_argument("--url", required=True)
    p.add_argument("--subject", default="sensors.a.temp")
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--messages", type=int, default=30)
    p.add_argument("--msg-id-prefix", default=None)
    p.add_argument("--expect-error-stream", default=None)
    p.add_argument("--acked", default=None)
    p.add_argument("--payload", default="hello")
    p.add_argument("--headers", action="store_true")
    p.add_argument("--timeout", type=float, default=10)
    p.add_argument("--tls-ca", default=None)
    args = p.parse_args()
    global TLS_CA
    TLS_CA = args.tls_ca
    fn = {"pubsub": pubsub, "queue": queue, "js": js_scenario, "crash": crash,
          "sub": sub, "pub": pub, "ordered": ordered, "fill": fill,
          "sys": sys_publish}[args.scenario]
    asyncio.run(fn(args))


if __name__ == "__main__":
    sys.exit(main())
