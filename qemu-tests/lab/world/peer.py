#!/usr/bin/env python3
"""Small network peers for the lab's checks, run inside a world namespace.

  peer.py send-udp DST PORT [SRC_PORT]     one datagram "probe"
  peer.py send-esp DST                     one ESP packet (IP protocol 50)
  peer.py send-ah DST                      one AH packet (IP protocol 51)
  peer.py tcp DST PORT [TIMEOUT]           prints "open" or "closed: <why>"
  peer.py serve-tcp IP:PORT...             accepts TCP connections on each
                                           address (and closes them): a
                                           service's port, for reachability
  peer.py ntp SERVER                       one NTP (SNTP) query: prints the
                                           server's stratum and the offset
  peer.py idle-serve IP PORT WAIT          waits for one datagram, stays quiet
                                           WAIT seconds, then answers to the
                                           address it came from
  peer.py idle-client DST PORT SRC_PORT TIMEOUT
                                           sends one datagram, prints
                                           "answer after N s" or "no answer"
Everything printed is one line.
"""

import selectors
import socket
import struct
import sys
import time


def main(argv):
    cmd = argv[1]
    if cmd == "send-udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if len(argv) > 4:
            s.bind(("", int(argv[4])))
        s.sendto(b"probe", (argv[2], int(argv[3])))
        print("sent")
    elif cmd == "send-ah":
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 51)
        # Next header (UDP), payload length (3: a 12-byte ICV), reserved,
        # SPI, sequence number, ICV.
        s.sendto(b"\x11\x03\x00\x00\x00\x00\x10\x02\x00\x00\x00\x01" + b"\x00" * 12, (argv[2], 0))
        print("sent")
    elif cmd == "send-esp":
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
        # SPI, sequence number, then the (here meaningless) payload.
        s.sendto(b"\x00\x00\x10\x01\x00\x00\x00\x01" + b"esp-probe" * 4, (argv[2], 0))
        print("sent")
    elif cmd == "tcp":
        timeout = float(argv[4]) if len(argv) > 4 else 3
        try:
            socket.create_connection((argv[2], int(argv[3])), timeout=timeout).close()
            print("open")
        except OSError as e:
            print(f"closed: {e}")
    elif cmd == "serve-tcp":
        sel = selectors.DefaultSelector()
        for spec in argv[2:]:
            ip, port = spec.rsplit(":", 1)
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind((ip, int(port)))
            srv.listen(16)
            sel.register(srv, selectors.EVENT_READ)
        print(f"listening on {' '.join(argv[2:])}", flush=True)
        while True:
            for key, _ in sel.select():
                conn, addr = key.fileobj.accept()
                print(f"{key.fileobj.getsockname()} from {addr[0]}:{addr[1]}", flush=True)
                conn.close()
    elif cmd == "ntp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        # LI 0, version 4, mode 3 (client); the rest zero.
        t0 = time.time()
        s.sendto(b"\x23" + b"\x00" * 47, (argv[2], 123))
        data, addr = s.recvfrom(512)
        t1 = time.time()
        stratum = data[1]
        secs, frac = struct.unpack("!II", data[40:48])
        server = secs - 2208988800 + frac / 2**32
        print(f"from {addr[0]}: stratum {stratum}, offset {server - (t0 + t1) / 2:+.3f} s")
    elif cmd == "idle-serve":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((argv[2], int(argv[3])))
        data, addr = s.recvfrom(2048)
        print(f"from {addr[0]}:{addr[1]}", flush=True)
        time.sleep(float(argv[4]))
        s.sendto(b"late answer", addr)
        print("answered", flush=True)
    elif cmd == "idle-client":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("", int(argv[4])))
        s.settimeout(float(argv[5]))
        t0 = time.monotonic()
        s.sendto(b"hello", (argv[2], int(argv[3])))
        try:
            s.recvfrom(2048)
            print(f"answer after {time.monotonic() - t0:.0f} s")
        except socket.timeout:
            print("no answer")
    else:
        sys.exit(f"peer.py: unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
