#!/usr/bin/python3
"""Small TCP/UDP peers for the router lab: listeners that tell who they saw,
and probes that report what came back. Standard library only.

  peer.py listen [--tcp PORTS] [--udp PORTS] [--addr ADDR] [--lifetime S]
      Binds every port (PORTS: comma-separated), prints "ready" once all are
      bound, then answers each TCP connection and each UDP datagram with
      "seen <source address> <source port>" and logs the same to stdout as
      "<proto>:<port> from <address> <port>". Exits by itself after --lifetime
      seconds (default 60), so a forgotten listener never outlives its test.

  peer.py probe --to ADDR [--timeout S] PROTO:PORT...
      Probes every PROTO:PORT (tcp or udp) on ADDR at once. Prints one line per
      target, in the order given: "<proto>:<port> <outcome> [detail]", where
      the outcome is one of
        reply        the listener answered; detail: what it said
        timeout      nothing came back (a silent drop)
        refused      TCP RST or ICMP port unreachable (no listener)
        unreachable  ICMP host/network/admin-prohibited (a firewall reject)
        error        anything else; detail: the error
      Always exits 0 when the arguments are valid: the caller judges outcomes.

  peer.py ping --to ADDR [--timeout S]
      Sends one ICMP echo request (raw socket: needs root) and prints
      "reply seen ADDR" when the matching echo reply comes, else "timeout" or
      "unreachable" (an ICMP error about the request came back).
"""

import argparse
import errno
import selectors
import socket
import struct
import sys
import threading
import time


# Linux's IP_PKTINFO; Python's socket module lacks the name before 3.12.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


def ports(text):
    return [int(p) for p in text.split(",") if p] if text else []


def reply_from(ancillary):
    """The IP_PKTINFO to send an answer from the address a datagram came to."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            _, _, dst = struct.unpack("I4s4s", data[:12])
            return [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("I4s4s", 0, dst, bytes(4)))]
    return []


def listen(args):
    sel = selectors.DefaultSelector()
    for port in ports(args.tcp):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((args.addr, port))
        s.listen(64)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, ("tcp", port))
    for port in ports(args.udp):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Learn each datagram's destination, so the answer leaves from the
        # address the sender asked (a host with several addresses).
        s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        s.bind((args.addr, port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, ("udp", port))
    print("ready", flush=True)
    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            proto, port = key.data
            sock = key.fileobj
            try:
                if proto == "tcp":
                    conn, (addr, sport) = sock.accept()
                    with conn:
                        conn.settimeout(1)
                        conn.sendall(f"seen {addr} {sport}\n".encode())
                else:
                    _, anc, _, (addr, sport) = sock.recvmsg(65535, socket.CMSG_SPACE(12))
                    sock.sendmsg(
                        [f"seen {addr} {sport}\n".encode()],
                        reply_from(anc),
                        0,
                        (addr, sport),
                    )
            except OSError as e:
                print(f"{proto}:{port} error {e}", flush=True)
                continue
            print(f"{proto}:{port} from {addr} {sport}", flush=True)


UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM}


def probe_one(to, target, timeout):
    proto, port = target.split(":")
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind)
    s.settimeout(timeout)
    try:
        s.connect((to, int(port)))
        if proto == "udp":
            s.send(b"probe\n")
        data = s.recv(1024)
        return f"reply {data.decode(errors='replace').strip()}"
    except socket.timeout:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        if e.errno in UNREACHABLE:
            return f"unreachable {errno.errorcode.get(e.errno, e.errno)}"
        return f"error {e}"
    finally:
        s.close()


def probe(args):
    results = [None] * len(args.targets)

    def run(i, target):
        results[i] = probe_one(args.to, target, args.timeout)

    threads = [
        threading.Thread(target=run, args=(i, t)) for i, t in enumerate(args.targets)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for target, result in zip(args.targets, results):
        print(f"{target} {result}", flush=True)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = threading.get_native_id() & 0xFFFF
    body = b"router-lab"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    header = struct.pack("!BBHHH", 8, 0, checksum(header + body), ident, 1)
    s.sendto(header + body, (args.to, 0))
    deadline = time.monotonic() + args.timeout
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            packet, (addr, _) = s.recvfrom(65535)
        except socket.timeout:
            break
        icmp = packet[(packet[0] & 0x0F) * 4 :]
        kind, _, _, rid, _ = struct.unpack("!BBHHH", icmp[:8])
        if kind == 0 and rid == ident and addr == args.to:
            print(f"reply seen {addr}", flush=True)
            return
        if kind == 3 and len(icmp) >= 36:
            # The quoted original: IP header, then our echo request.
            inner = icmp[8:]
            quoted = inner[(inner[0] & 0x0F) * 4 :]
            if quoted[:1] == b"\x08" and struct.unpack("!H", quoted[4:6])[0] == ident:
                print("unreachable", flush=True)
                return
    print("timeout", flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("listen")
    ls.add_argument("--tcp", default="")
    ls.add_argument("--udp", default="")
    ls.add_argument("--addr", default="0.0.0.0")
    ls.add_argument("--lifetime", type=float, default=60)
    pr = sub.add_parser("probe")
    pr.add_argument("--to", required=True)
    pr.add_argument("--timeout", type=float, default=3.0)
    pr.add_argument("targets", nargs="+")
    pg = sub.add_parser("ping")
    pg.add_argument("--to", required=True)
    pg.add_argument("--timeout", type=float, default=1.5)
    args = p.parse_args()
    if args.cmd == "listen":
        listen(args)
    elif args.cmd == "ping":
        ping(args)
    else:
        for t in args.targets:
            proto, _, port = t.partition(":")
            if proto not in ("tcp", "udp") or not port.isdigit():
                sys.exit(f"bad target {t!r}: want tcp:PORT or udp:PORT")
        probe(args)


if __name__ == "__main__":
    main()
