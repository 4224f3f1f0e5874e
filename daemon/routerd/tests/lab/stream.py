#!/usr/bin/python3
"""A voice-like UDP stream for the router lab: a steady flow of numbered
datagrams from one socket (like RTP or a SIP keep-alive), and a sink that
counts them and answers each with the source address it saw. Standard
library only.

  stream.py sink --addr ADDR --port P [--lifetime S]
      Binds ADDR (so answers leave from the address the stream goes to) and
      prints "ready". Answers every datagram with
      "seen <source address>" and, when it exits (after --lifetime seconds,
      or on SIGTERM or SIGINT), prints "received <count> max <highest seq> missing
      <first missing seqs, comma-separated or ->".

  stream.py send --to ADDR --port P --sport SP --rate PPS --seconds S
      Sends S*PPS datagrams "seq <n>" from SP, at PPS per second, then waits
      one more second for answers. Prints "reply <seconds since start>
      <address the sink saw>" for every answer, and "sent <count>" at the end.
"""

import argparse
import signal
import socket
import sys
import time


def sink(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((args.addr, args.port))
    s.settimeout(0.2)
    seqs = set()
    stop = [False]

    def finish(*_):
        stop[0] = True

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    print("ready", flush=True)
    end = time.monotonic() + args.lifetime
    while not stop[0] and time.monotonic() < end:
        try:
            data, peer = s.recvfrom(2048)
        except socket.timeout:
            continue
        parts = data.split()
        if len(parts) == 2 and parts[0] == b"seq":
            seqs.add(int(parts[1]))
        s.sendto(("seen %s" % peer[0]).encode(), peer)
    top = max(seqs) if seqs else -1
    missing = [str(n) for n in range(top + 1) if n not in seqs][:20]
    print("received %d max %d missing %s" % (len(seqs), top, ",".join(missing) or "-"), flush=True)


def send(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", args.sport))
    s.setblocking(False)
    start = time.monotonic()
    total = int(args.rate * args.seconds)
    interval = 1.0 / args.rate

    def drain():
        while True:
            try:
                data, _ = s.recvfrom(2048)
            except (BlockingIOError, ConnectionRefusedError):
                return
            text = data.decode(errors="replace")
            if text.startswith("seen "):
                print("reply %.3f %s" % (time.monotonic() - start, text[5:]), flush=True)

    for n in range(total):
        due = start + n * interval
        while time.monotonic() < due:
            drain()
            time.sleep(min(0.002, max(0.0, due - time.monotonic())))
        try:
            s.sendto(b"seq %d" % n, (args.to, args.port))
        except OSError as e:
            print("send-error %d %s" % (n, e), flush=True)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        drain()
        time.sleep(0.01)
    print("sent %d" % total, flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("sink")
    k.add_argument("--addr", required=True)
    k.add_argument("--port", type=int, required=True)
    k.add_argument("--lifetime", type=float, default=60)
    t = sub.add_parser("send")
    t.add_argument("--to", required=True)
    t.add_argument("--port", type=int, required=True)
    t.add_argument("--sport", type=int, required=True)
    t.add_argument("--rate", type=float, default=50)
    t.add_argument("--seconds", type=float, default=5)
    args = p.parse_args()
    sink(args) if args.cmd == "sink" else send(args)


if __name__ == "__main__":
    sys.exit(main())
