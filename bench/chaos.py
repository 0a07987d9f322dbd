#!/usr/bin/env python3
"""The client of bench/chaos.sh, speaking Piazza's binary protocol (protocol.md).

  chaos.py run COORDINATOR SECONDS KEYS SEED
      PUT/DELETE/GET over KEYS keys (chaos:0...) through the coordinator, one request at a
      time, with a model of what each key may hold: a set of values (None: absent). An
      acknowledged write leaves only its value; a failed one adds its value (it may have
      landed); a read must return one of the set, and then leaves only that. A read the
      model rules out is printed (WRONG, with what every reachable slave holds of the key
      in its tables) and counted. Prints STATS at the end.
  chaos.py check SLAVE... -- KEYS
      Every key must have one copy in one slave's own and the same in another's previous,
      or none: prints the keys that do not, and how many ("bad").
"""
import random, socket, struct, sys, time, zlib

def frame(op, rid, key=b"", value=b"", table=0):
    head = struct.pack(">BBBBIQIB3xII", 0xA7, 1, op, 0, rid, 0, 0, table, len(key), len(value))
    return head + struct.pack(">I", zlib.crc32(head + key + value)) + key + value

def read_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data

def exchange(s, f):
    s.sendall(f)
    head = read_exactly(s, 36)
    _, _, _, status, _, arg, _, _, klen, vlen, _ = struct.unpack(">BBBBIQIB3xIII", head)
    body = read_exactly(s, klen + vlen)
    return status, arg, body[klen:]

def connect(addr, timeout):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)

def holdings(addrs, key):
    out = []
    for addr in addrs:
        try:
            s = connect(addr, 1)
        except OSError:
            continue
        with s:
            for table, name in ((1, "own"), (2, "previous")):
                status, version, value = exchange(s, frame(0x20, 1, key, table=table))
                if status == 0:
                    out.append((addr, name, version, value))
    return out

def run(coordinator, secs, nkeys, seed):
    rnd = random.Random(seed)
    host, port = coordinator.rsplit(":", 1)
    slaves = ["%s:%d" % (host, int(port) + 10 + i) for i in range(1, 5)]
    keys = [b"chaos:%d" % i for i in range(nkeys)]
    may_hold = {k: {None} for k in keys}
    stats = dict(ok=0, failed=0, wrong=0, reads=0, writes=0)
    conn = None
    end = time.time() + secs
    n = 0
    while time.time() < end:
        n += 1
        key = rnd.choice(keys)
        draw = rnd.random()
        kind = "put" if draw < 0.45 else "delete" if draw < 0.55 else "get"
        value = b"v%d" % n
        request = {"put": frame(0x02, n % 2**32, key, value),
                   "delete": frame(0x03, n % 2**32, key),
                   "get": frame(0x01, n % 2**32, key)}[kind]
        try:
            if conn is None:
                conn = connect(coordinator, 5)
            status, _, got = exchange(conn, request)
        except OSError:
            if conn is not None:
                conn.close()
            conn, status = None, None
        if kind != "get":
            stats["writes"] += 1
            written = value if kind == "put" else None
            if status == 0 or (kind == "delete" and status == 1):
                may_hold[key] = {written}
                stats["ok"] += 1
            else:
                may_hold[key].add(written)
                stats["failed"] += 1
                time.sleep(0.02)
            continue
        if status not in (0, 1):
            stats["failed"] += 1
            time.sleep(0.02)
            continue
        stats["reads"] += 1
        got = got if status == 0 else None
        if got in may_hold[key]:
            may_hold[key] = {got}
        else:
            stats["wrong"] += 1
            print("WRONG %s %s: got %r, may hold %r" % (time.strftime("%H:%M:%S"), key.decode(),
                  got, sorted(map(repr, may_hold[key]))), flush=True)
            print("  held: %r" % holdings(slaves, key), flush=True)
    print("STATS", stats, flush=True)

def check(addrs, nkeys):
    bad = 0
    for i in range(nkeys):
        key = b"chaos:%d" % i
        held = holdings(addrs, key)
        own = [(v, val) for _, t, v, val in held if t == "own"]
        previous = [(v, val) for _, t, v, val in held if t == "previous"]
        if not ((len(own) == 1 and own == previous) or not held):
            bad += 1
            if bad <= 10:
                print("BAD", key.decode(), held)
    print("checked %d keys, bad %d" % (nkeys, bad))

if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        sep = sys.argv.index("--")
        check(sys.argv[2:sep], int(sys.argv[sep + 1]))
