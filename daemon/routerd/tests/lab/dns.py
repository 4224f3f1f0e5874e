#!/usr/bin/python3
"""A DNS A-record lookup for the router lab, standard library only (the host
has no dig): one UDP query to the given server, the answers printed.

  dns.py --server ADDR --name NAME
      Prints "answer <address> ttl <seconds>" per A record and "rcode <n>";
      "timeout" if no answer comes within 3 s.
"""

import argparse
import random
import socket
import struct


def query(name):
    qid = random.randrange(65536)
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return qid, header + qname + struct.pack("!HH", 1, 1)


def skip_name(msg, i):
    while True:
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += n + 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--name", required=True)
    args = p.parse_args()
    qid, packet = query(args.name)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(packet, (args.server, 53))
    try:
        msg, _ = s.recvfrom(4096)
    except socket.timeout:
        print("timeout")
        return
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid:
        print("wrong-id")
        return
    i = 12
    for _ in range(qd):
        i = skip_name(msg, i) + 4
    for _ in range(an):
        i = skip_name(msg, i)
        rtype, _, ttl, length = struct.unpack("!HHIH", msg[i:i + 10])
        i += 10
        if rtype == 1 and length == 4:
            print("answer %s ttl %d" % (socket.inet_ntoa(msg[i:i + 4]), ttl))
        i += length
    print("rcode %d" % (flags & 0xF))


if __name__ == "__main__":
    main()
