#!/usr/bin/env python3
"""slowloris.py PORT - /health latency of `stepq serve` on 127.0.0.1:PORT,
idle and under a slow-client attack (bench/run-http.sh).

The attack: CONNS connections that each send a request head one byte every
TRICKLE seconds and never finish it, from ADDRS source addresses of the
loopback range (127.0.0.2, ...); a connection the server closes is opened
again at the next tick of the trickle (as slowloris tools do). Meanwhile a prober on 127.0.0.1 sends GET /health on a new
connection every 20 ms and times the answer (a refused or unanswered one
counts as an error and as its time-out, 2 s). Bounded: SECONDS of attack.
Prints one line per phase: p50, p99, max and errors of the probes."""
import selectors
import socket
import sys
import threading
import time

PORT = int(sys.argv[1])
CONNS = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
ADDRS = int(sys.argv[3]) if len(sys.argv) > 3 else 1
SECONDS = float(sys.argv[4]) if len(sys.argv) > 4 else 15
TRICKLE = 2.0
HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000


def probe_once():
    t0 = time.perf_counter()
    try:
        s = socket.create_connection(("127.0.0.1", PORT), timeout=2)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        ok = data.startswith(b"HTTP/1.1 200")
    except OSError:
        ok = False
    dt = time.perf_counter() - t0
    return (dt if ok else 2.0), ok


def probe(n, out):
    for _ in range(n):
        out.append(probe_once())
        time.sleep(0.02)


def summary(name, res):
    lat = sorted(r[0] * 1000 for r in res)
    errs = sum(1 for r in res if not r[1])
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print("%-44s %6d %9.2f %9.2f %9.2f %7d" % (name, len(lat), p(0.50), p(0.99), lat[-1], errs))
    sys.stdout.flush()
    return p(0.99)


class Attack(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.stop = False
        self.opened = self.closed_by_server = self.refused = 0
        self.peak = 0
        self.reopen = []  # (slot, when): closed by the server, opened again later

    def open(self, sel, i):
        src = "127.0.0.%d" % (2 + i % ADDRS)
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((src, 0))
            s.connect_ex(("127.0.0.1", PORT))
        except OSError:
            s.close()
            self.refused += 1
            return
        sel.register(s, selectors.EVENT_READ, [i, 0, time.time()])
        self.opened += 1

    def run(self):
        sel = selectors.DefaultSelector()
        for i in range(CONNS):
            self.open(sel, i)
        while not self.stop:
            now = time.time()
            for key, _ in sel.select(timeout=0.1):
                try:
                    gone = key.fileobj.recv(4096) == b""
                except OSError:
                    gone = True
                if gone:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
                    self.closed_by_server += 1
                    self.reopen.append((key.data[0], now + TRICKLE))
            while self.reopen and self.reopen[0][1] <= now:
                self.open(sel, self.reopen.pop(0)[0])
            live = list(sel.get_map().values())
            self.peak = max(self.peak, len(live))
            for key in live:
                i, sent, last = key.data
                if now - last >= TRICKLE and sent < len(HEAD):
                    try:
                        key.fileobj.send(HEAD[sent:sent + 1])
                        key.data[1] += 1
                    except OSError:
                        pass
                    key.data[2] = now
        for key in list(sel.get_map().values()):
            key.fileobj.close()


def main():
    print("%-44s %6s %9s %9s %9s %7s" % ("/health, new connection each", "probes", "p50 ms", "p99 ms", "max ms", "errors"))
    idle = []
    probe(300, idle)
    summary("idle", idle)
    a = Attack()
    a.start()
    time.sleep(1.0)
    res = []
    t_end = time.time() + SECONDS
    while time.time() < t_end:
        probe(25, res)
    a.stop = True
    a.join()
    p99 = summary("under %d slow connections from %d address%s" % (CONNS, ADDRS, "" if ADDRS == 1 else "es"), res)
    print("  attack: %d opened, %d closed by the server, %d could not open; at most %d open at once" % (
        a.opened, a.closed_by_server, a.refused, a.peak))
    print("  p99 under attack %s 100 ms (target < 100 ms)" % ("<" if p99 < 100 else ">="))


main()
