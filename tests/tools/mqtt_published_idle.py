#!/usr/bin/env python3
"""Memory of MQTT clients that published once and went quiet (issue 17): what a publishing
connection keeps after it parks.

Starts BROKER (a `[[route]]` for sensors/#, key {topic.2}, fsync "always", /metrics on, data
in a temp dir), reads its VmRSS, then opens COUNT MQTT 3.1.1 connections that each CONNECT,
publish one QoS 1 message on sensors/<i>/t (routed), wait for the PUBACK and go silent. 9 s
later (mqtt.park_idle_after is 5 s) prints VmRSS, edge_mqtt_connections_parked and the stored
count, then stops the broker. With `connect` instead of `publish` the clients only connect.

  python3 tests/tools/mqtt_published_idle.py BROKER COUNT publish|connect

Standard library only; raise `ulimit -n` above COUNT + 100 if the hard limit is lower.
"""
import os, socket, struct, subprocess, sys, tempfile, time, resource, urllib.request

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def connect_packet(cid):
    cid = cid.encode()
    body = struct.pack("!H4sBBH", 4, b"MQTT", 4, 0x02, 0) + struct.pack("!H", len(cid)) + cid
    return bytes([0x10, len(body)]) + body

def publish_packet(topic, pid, payload):
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t + struct.pack("!H", pid) + payload
    assert len(body) < 128
    return bytes([0x32, len(body)]) + body

def read_exact(s, n):
    d = b""
    while len(d) < n:
        c = s.recv(n - len(d))
        if not c: raise ConnectionError("closed")
        d += c
    return d

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1])

def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"): return line

def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("publish", "connect"):
        sys.exit(__doc__)
    binary, count, publish = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "publish"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    work = tempfile.mkdtemp(prefix="mqf-mem-")
    mport, nport, xport = free_port(), free_port(), free_port()
    open(f"{work}/c.toml", "w").write(f'''[node]
id = "mem"
data_dir = "{work}/data"
[mqtt]
listen = "127.0.0.1:{mport}"
max_connections = {count + 100}
[nats]
listen = "127.0.0.1:{nport}"
[log]
fsync = "always"
[metrics]
listen = "127.0.0.1:{xport}"
[[route]]
mqtt = "sensors/#"
kafka_topic = "sensors"
key = "{{topic.2}}"
''')
    broker = subprocess.Popen([binary, "--config", f"{work}/c.toml"], stdout=open(f"{work}/log", "w"), stderr=subprocess.STDOUT)
    try:
        time.sleep(1.5)
        idle = rss_kib(broker.pid)
        socks = []
        for i in range(count):
            s = socket.create_connection(("127.0.0.1", mport))
            s.sendall(connect_packet(f"dev-{i}"))
            ack = read_exact(s, 4)
            assert ack[3] == 0, ack
            socks.append(s)
        if publish:
            for i, s in enumerate(socks):
                s.sendall(publish_packet(f"sensors/{i}/t", 1, b"21.5"))
            for s in socks:
                ack = read_exact(s, 4)
                assert ack[0] == 0x40, ack
        time.sleep(3 + 6)
        print(f"{os.path.basename(binary)} clients={count} published={publish}: idle {idle} KiB, "
              f"with clients {rss_kib(broker.pid)} KiB, parked {metric(xport, 'edge_mqtt_connections_parked')}, "
              f"stored {metric(xport, 'edge_messages_stored_total')}")
    finally:
        broker.terminate(); broker.wait()

main()
