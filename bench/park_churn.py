#!/usr/bin/env python3
"""What parking an idle MQTT connection costs in CPU (issue 17; BENCHMARKS.md, "Parked idle
connections"): CLIENTS raw MQTT 3.1.1 clients each publish a 100-byte QoS 0 message to their own
unrouted topic every PERIOD seconds for SECONDS; the broker's CPU time (utime + stime from
/proc/PID/stat) is read before and after. Run it against one broker with
`park_idle_after = "0s"` (parking off) and one with `"1ms"` (a park and a resumption around
every message), one after the other: the difference over the messages sent is the cost of one
park and resumption.

Usage: bench/park_churn.py PORT BROKER_PID [CLIENTS] [PERIOD] [SECONDS]   (defaults 100 0.05 6)
Prints one line: messages sent, broker CPU in ms. Clients connect 5 ms apart (under
max_pending_per_source). Prints numbers only; asserts nothing.
"""
import asyncio
import os
import sys
import time


def connect_packet(client_id):
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x00" + len(cid).to_bytes(2, "big") + cid
    return bytes([0x10, len(body)]) + body


def publish_packet(topic, payload):
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + payload
    return bytes([0x30, len(body)]) + body


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1000 // os.sysconf("SC_CLK_TCK")


async def client(port, i, clients, period, seconds, start):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(connect_packet(f"churn{i}"))
    await writer.drain()
    await reader.readexactly(4)
    await start.wait()
    end = time.monotonic() + seconds
    sent = 0
    await asyncio.sleep(period * i / clients)
    while time.monotonic() < end:
        writer.write(publish_packet(f"churn/{i}", b"p" * 100))
        await writer.drain()
        sent += 1
        await asyncio.sleep(period)
    writer.close()
    return sent


async def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    clients = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    period = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05
    seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 6.0
    start = asyncio.Event()
    tasks = []
    for i in range(clients):
        tasks.append(asyncio.create_task(client(port, i, clients, period, seconds, start)))
        await asyncio.sleep(0.005)
    await asyncio.sleep(1.5)
    before = cpu_ms(pid)
    start.set()
    sent = sum(await asyncio.gather(*tasks))
    print(f"messages {sent} broker_cpu_ms {cpu_ms(pid) - before}")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) > 1 else 2)
    asyncio.run(main())
