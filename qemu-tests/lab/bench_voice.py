#!/usr/bin/env python3
"""Voice under load: no shaping vs cake (piece_of_cake) vs the router's own shaper.

Started by `run.sh --bench`, which starts the lab's two QEMU machines. The
world emulates the access line in its `isp` namespace: HTB at the line's
rates, counting bytes on the line with a size table, behind a deep modem
buffer; the upload through an IFB. The phones send N G.711-like streams to
the provider and the provider N back (50 packets/s of 200 IP bytes each way,
per call), while the PC saturates upload and download with TCP (iperf3).
The router runs each setting in turn, in one boot. tcpdump stamps every
voice packet where it arrives; sender and receiver share the world's
clock, so the one-way delay is exact. Prints a markdown table, whether each
setting meets the target, and the router's counters.

To tell the router's part from the lab's, each run also measures how late
the world's senders ran against their 20 ms clock and how late the shaper
timers ran on the router and in the line emulation (tracefs), prints the
largest delay of each second, and gives the p99 once more over the seconds
in which the senders kept their clock (within ON_CLOCK_MS, for ON_CLOCK_AFTER
seconds before). It also captures the download's TCP where it enters the
ISP and its acknowledgements on both sides of the modem, and notes how much
of the download reached the DSLAM in bursts and how bunched the
acknowledgements were (dslam_bursts).

A subset, to look into one row (the idle and voice-only rows always run):
  ROUTERD_BENCH_SETTINGS=ours,cake ROUTERD_BENCH_CALLS=17 run.sh --bench
ROUTERD_BENCH_DELAY_MS=N adds N ms each way between the ISP and the
internet (netem), for a round trip like a real line's; 0 by default.
To try a change to the tree side by side with ours, name it and give the
commands that make it on the router after ours is applied, then run it as
a setting:
  ROUTERD_BENCH_VARIANTS='{"short": "tc qdisc replace dev ifb-eth0 parent 1:20 handle 20: fq_codel interval 20ms"}'
  ROUTERD_BENCH_SETTINGS=ours,short run.sh --bench --quick

The same file runs inside the world VM (as /lab/bench_voice.py):
  bench_voice.py send near|far LOCAL REMOTE FIRST COUNT TOTAL SECONDS OUT
  bench_voice.py summarize DIR DOWN_BPS FRAME_BYTES
"""

import argparse
import bisect
import json
import os
import re
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

LOG = "/tmp/world"  # the world's scratch directory (lab_test.LOG)
ME = "/lab/bench_voice.py"  # this file inside the world VM
FAR = "185.72.208.20"  # the provider's media address
BULK = "203.0.113.99"  # a host on the internet, for the PC's TCP
NEAR_PORT, FAR_PORT = 16384, 20000  # stream k: phone port +2k <-> provider port +2k (RTP range)
PAYLOAD = 172  # RTP header 12 + 160 bytes of G.711 per 20 ms: 200-byte IP packets
PKT = struct.Struct("!IHHIq")  # magic, stream, 0, sequence number, send time (ns)
MAGIC = 0x766F6963
FRAME = {"atm": 1696, "ethernet": 1518}  # a 1500-byte IP packet on the line, bytes

# The line (bit/s, framing, modem buffer), the router config's changes for
# it (sed), cake's framing keywords, the call counts to load it with, and
# the calls of its idle baseline (no bulk, no shaping), seconds per run.
# ADSL: 18 calls fit the line (`routerctl capacity`), 20 are the provider's
# rule, the factory tree's upload voice class holds 16 (with 5 % headroom
# a call), and 17 fill its room to 99.8 %.
SETTINGS = ["none", "cake", "ours"]
CASES = [
    dict(name="ADSL 5/2", down=5_000_000, up=2_000_000, framing="atm", buffer_ms=150,
         sed="", cake="atm overhead 10", calls=[16, 17, 18, 20], idle=18, voice_only=17, seconds=30),
    dict(name="fibre 100/100", down=100_000_000, up=100_000_000, framing="ethernet", buffer_ms=50,
         sed=r's/^down = .*/down = "100M"/; s/^up = .*/up = "100M"/; '
             r's/^framing = .*/framing = "ethernet"\ncalls = 100/',
         cake="overhead 18", calls=[100], idle=100, voice_only=100, seconds=15),
]


# --------------------------------------------------------- inside the world VM
def send(role, local, remote, first, count, total, seconds, out):
    """Sends streams first..first+count-1 of total (their phases spread over
    20 ms), 50 packets/s each. `near` (a phone) sends to the provider; `far`
    (the provider) answers each stream where its first packet came from, as
    a media server does behind the phone's NAT. Nothing reads: tcpdump at
    the receiver stamps what arrives. Writes {stream: packets sent}."""
    socks = []
    for k in range(first, first + count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        s.bind((local, (NEAR_PORT if role == "near" else FAR_PORT) + 2 * k))
        if role == "near":
            s.connect((remote, FAR_PORT + 2 * k))
        socks.append(s)
    if role == "far":
        for s in socks:
            s.settimeout(30)
            s.connect(s.recvfrom(2048)[1])
    buf = bytearray(os.urandom(PAYLOAD))
    sent, late = [0] * count, []
    realtime(True)
    t0 = time.monotonic() + 0.1
    for seq in range(int(seconds * 50)):
        for i, s in enumerate(socks):
            wait = t0 + seq * 0.02 + (first + i) * 0.02 / total - time.monotonic()
            if wait > 0.0005:
                time.sleep(wait)
            elif wait < -1:  # the VM cannot keep up: skip rather than overrun
                continue
            late.append(round(-wait * 1000, 1) if wait < 0 else 0.0)
            PKT.pack_into(buf, 0, MAGIC, first + i, 0, seq, time.time_ns())
            try:
                s.send(buf)
                sent[i] += 1
            except OSError:  # the phone's side closed first (ICMP unreachable)
                pass
    realtime(False)
    with open(out, "w") as f:
        json.dump(dict(sent={str(first + i): n for i, n in enumerate(sent)}, late=late), f)


def realtime(on):
    """A phone's DSP sends on the clock, so the sending loop runs at
    real-time priority (SCHED_FIFO), and only the loop: a sender starting
    Python or writing its results at that priority would hold back the
    others, which FIFO does not let preempt their equal, and their calls
    would burst (measured: up to 444 ms late in the last second)."""
    policy, prio = (os.SCHED_FIFO, 50) if on else (os.SCHED_OTHER, 0)
    os.sched_setscheduler(0, policy, os.sched_param(prio))


def pcap_records(path):
    """(time ns, IPv4 header and what was captured after it) of each packet
    in a pcap of an Ethernet interface."""
    with open(path, "rb") as f:
        data = f.read()
    nano = data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    rec = struct.Struct(("<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">") + "IIII")
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _ = rec.unpack_from(data, pos)
        ip = data[pos + 16 + 14 : pos + 16 + incl]  # after the Ethernet header
        pos += 16 + incl
        if len(ip) >= 20:
            yield sec * 1_000_000_000 + frac * (1 if nano else 1000), ip


def pcap_packets(path):
    """(time ns, stream, seq, send ns, to the provider?) of each voice packet
    in a pcap."""
    for t, ip in pcap_records(path):
        if len(ip) >= (ip[0] & 0x0F) * 4 + 8 + PKT.size:
            magic, stream, _, seq, t_send = PKT.unpack_from(ip, (ip[0] & 0x0F) * 4 + 8)
            if magic == MAGIC:
                yield t, stream, seq, t_send, ip[16:20] == socket.inet_aton(FAR)


def tcp_segments(path):
    """(time ns, from the internet's host?, flow port, TCP payload bytes)
    of each TCP packet of the download in a pcap."""
    bulk = socket.inet_aton(BULK)
    for t, ip in pcap_records(path):
        hl = (ip[0] & 0x0F) * 4
        if ip[9] != 6 or len(ip) < hl + 20:
            continue
        length = struct.unpack_from("!H", ip, 2)[0]
        sport, dport = struct.unpack_from("!HH", ip, hl)
        from_bulk = ip[12:16] == bulk
        yield t, from_bulk, dport if from_bulk else sport, length - hl - (ip[hl + 12] >> 4) * 4


DSLAM_WAIT_MS = 10  # download voice that waited longer than this in the DSLAM: what was ahead of it
BURST_MIN = 4  # segments that arrive faster than the line drains them, back to back: a burst
ACK_BUNCH_NS = 1_000_000  # acknowledgements this close together arrive as one bunch


def dslam_bursts(d, entry, mid, down_bps, frame):
    """Where the DSLAM's queue comes from (the download): the TCP segments
    as they entered the ISP from the internet (`dslam-tcp.pcap`, with the
    acknowledgements leaving toward the internet, after the modem) and as the
    router sent the acknowledgements (`acks-line.pcap`, before the modem).

    A burst is a run of BURST_MIN or more segments each arriving less than
    half a frame's time on the line after the one before, so faster than
    twice the line drains them. For each burst: how many flows sent it, and
    how many acknowledgements reached the internet in the ACK_BUNCH_NS
    before it began (a bunch of them releases a window at once). For each
    download voice packet that waited more than DSLAM_WAIT_MS in the DSLAM:
    the segments that entered in that wait before it (the queue ahead of it,
    roughly) and their flows. And how bunched the acknowledgements were
    where the router sent them and where they reached the internet."""
    path = f"{d}/dslam-tcp.pcap"
    if not os.path.exists(path):
        return None
    segs, acks = [], []
    for t, from_bulk, flow, payload in tcp_segments(path):
        if from_bulk and payload > 0:
            segs.append((t, flow))
        elif not from_bulk and payload == 0:
            acks.append(t)
    line_acks = [t for t, from_bulk, _, payload in tcp_segments(f"{d}/acks-line.pcap")
                 if not from_bulk and payload == 0] if os.path.exists(f"{d}/acks-line.pcap") else []
    gap = frame * 8 / down_bps * 1e9 / 2
    bursts, run = [], segs[:1]
    for prev, cur in zip(segs, segs[1:]):
        if cur[0] - prev[0] < gap:
            run.append(cur)
        else:
            if len(run) >= BURST_MIN:
                bursts.append(run)
            run = [cur]
    if len(run) >= BURST_MIN:
        bursts.append(run)

    def bunches(times):
        """Sizes of the runs of acknowledgements closer than ACK_BUNCH_NS."""
        out, n = [], 1 if times else 0
        for a, b in zip(times, times[1:]):
            if b - a < ACK_BUNCH_NS:
                n += 1
            else:
                out.append(n)
                n = 1
        return out + ([n] if n else [])

    ack_before = lambda t: bisect.bisect_left(acks, t) - bisect.bisect_left(acks, t - ACK_BUNCH_NS)
    seg_times = [s[0] for s in segs]
    ahead = []
    for key, t_in in entry.items():
        if key in mid and (mid[key] - t_in) / 1e6 > DSLAM_WAIT_MS:
            lo, hi = bisect.bisect_left(seg_times, t_in - (mid[key] - t_in)), bisect.bisect_left(seg_times, t_in)
            ahead.append((hi - lo, len({s[1] for s in segs[lo:hi]})))
    sizes = [len(b) for b in bursts]
    mean = lambda v: sum(v) / len(v) if v else None
    return dict(
        segments=len(segs), acks=len(acks), bursts=len(bursts),
        burst_segments_share=sum(sizes) / len(segs) if segs else 0.0,
        burst_p50=pct(sizes, 50), burst_p99=pct(sizes, 99), burst_max=max(sizes, default=None),
        burst_one_flow=sum(len({s[1] for s in b}) == 1 for b in bursts) / len(bursts) if bursts else None,
        burst_acks_before=mean([ack_before(b[0][0]) for b in bursts]),
        acks_before_any_segment=mean([ack_before(t) for t in seg_times]),
        ack_bunch_internet_p99=pct(bunches(acks), 99), ack_bunch_router_p99=pct(bunches(line_acks), 99),
        waited=len(ahead), ahead_segments=mean([a[0] for a in ahead]), ahead_flows=mean([a[1] for a in ahead]))


def ms(x):
    """A figure in ms (or a count) with one decimal, '-' when there is none."""
    return "-" if x is None else f"{x:.1f}"


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, round(p / 100 * (len(v) - 1)))] if v else None


EDGE_NS = 1_000_000_000  # delay statistics leave out the first and last second
ON_CLOCK_MS = 20  # a packet interval: a sender less late than this has no second packet of a stream due
ON_CLOCK_AFTER = 2  # seconds a burst may take to drain at what the calls leave of a line


def direction(sent, pcaps, mid, up, entry=None):
    """Loss %, one-way delay p50/p99 and mean |IPDV| (ms) of one direction,
    and the p99 of its two parts, split where the packet crossed the ISP's
    end of the WAN link (`mid`): the router's part and the line's (modem
    or DSLAM buffer). Loss counts every packet. The delays leave out the
    first and the last second of sending, when the world starts and stops
    the senders (as iperf3 omits its first seconds); the largest delay of
    each second, edges included, is returned beside them. With `entry`
    (where the packet entered the ISP from the internet), the line's part
    of the download is split once more: the world's sending, and the DSLAM's
    own queue.

    A sender that ran late sends its backlog at once, and that burst queues
    in any shaper that carries the calls near its rate: a lab artifact that
    a phone's DSP does not make. So the p99 is also given over the seconds
    in which, and in the ON_CLOCK_AFTER seconds before which, no packet of
    this direction was sent more than ON_CLOCK_MS late against its stream's
    20 ms clock (`on_clock_p99`, and the share of the steady seconds that
    were), with the largest lateness of each second beside it."""
    arrived, t_sent = {}, {}
    for path in pcaps:
        for t, stream, seq, t_send, _ in pcap_packets(path):
            if (stream, seq) not in arrived:
                arrived[stream, seq], t_sent[stream, seq] = t, t_send
    lo, hi = min(t_sent.values(), default=0), max(t_sent.values(), default=0)
    steady = lambda key: lo + EDGE_NS <= t_sent[key] <= hi - EDGE_NS
    second_of = lambda key: int((t_sent[key] - lo) / 1e9)
    # Each stream's clock: its earliest packet against its sequence number.
    phase, late = {}, {}
    for (stream, seq), t in t_sent.items():
        phase[stream] = min(phase.get(stream, t), t - seq * 20_000_000)
    for (stream, seq), t in t_sent.items():
        b = second_of((stream, seq))
        late[b] = max(late.get(b, 0), (t - phase[stream] - seq * 20_000_000) / 1e6)
    on_clock = lambda b: all(late.get(b - i, 0) <= ON_CLOCK_MS for i in range(ON_CLOCK_AFTER + 1))
    steady_seconds = {second_of(k) for k in t_sent if steady(k)}
    delays, clean, parts, ipdv, last, per_second = [], [], ([], []), [], {}, {}
    entry, split = entry or {}, ([], [])
    for (stream, seq) in sorted(arrived):
        key, t_send = (stream, seq), t_sent[stream, seq]
        d = (arrived[key] - t_send) / 1e6
        b = second_of(key)
        per_second[b] = max(per_second.get(b, 0), d)
        if not steady(key):
            continue
        delays.append(d)
        if on_clock(b):
            clean.append(d)
        if key in mid:
            first, second = (mid[key] - t_send) / 1e6, (arrived[key] - mid[key]) / 1e6
            parts[0].append(first if up else second)
            parts[1].append(second if up else first)
            if key in entry:
                split[0].append((entry[key] - t_send) / 1e6)
                split[1].append((mid[key] - entry[key]) / 1e6)
        if last.get(stream, (None,))[0] == seq - 1:
            ipdv.append(abs(d - last[stream][1]))
        last[stream] = (seq, d)
    total = sum(sent.values())
    # Where the loss fell: the second of each stream's clock a missing
    # packet was due in (a sender that skipped packets would count too).
    lost = {}
    for stream, n in sent.items():
        for seq in range(n):
            if (int(stream), seq) not in arrived:
                lost[seq // 50] = lost.get(seq // 50, 0) + 1
    return dict(sent=total, lost_per_second=dict(sorted(lost.items())), got=len(arrived), loss=100 * (total - len(arrived)) / total if total else 100.0,
                per_second=[round(per_second.get(b, 0)) for b in range(max(per_second, default=-1) + 1)],
                late_per_second=[round(late.get(b, 0)) for b in range(max(late, default=-1) + 1)],
                p50=pct(delays, 50), p99=pct(delays, 99), on_clock_p99=pct(clean, 99),
                on_clock_share=sum(map(on_clock, steady_seconds)) / len(steady_seconds) if steady_seconds else 0.0,
                jitter=sum(ipdv) / len(ipdv) if ipdv else None,
                router_p99=pct(parts[0], 99), line_p99=pct(parts[1], 99),
                to_line_p99=pct(split[0], 99), line_queue_p99=pct(split[1], 99))


def bulk(path):
    """Mbit/s the receiver got; if iperf3 failed (a starved control
    connection), what its intervals counted, marked approximate."""
    if not os.path.exists(path):
        return None, ""
    with open(path) as f:
        j = json.load(f)
    if "error" not in j:
        return j["end"]["sum_received"]["bits_per_second"] / 1e6, ""
    iv = [i["sum"] for i in j.get("intervals", []) if not i["sum"].get("omitted")]
    secs = sum(i["seconds"] for i in iv)
    return (sum(i["bytes"] for i in iv) * 8 / secs / 1e6 if secs else 0.0), f"iperf3: {j['error']}"


def first_seen(path):
    """{to the provider?: {(stream, seq): time ns}}: when each voice packet
    first crossed the capture point of the pcap at `path`."""
    seen = {True: {}, False: {}}
    for t, stream, seq, _, up in pcap_packets(path):
        seen[up].setdefault((stream, seq), t)
    return seen


def summarize(d, down_bps, frame):
    def sent(role):
        out, late = {}, []
        for name in os.listdir(d):
            if name.startswith(role + "-") and name.endswith(".json"):
                with open(os.path.join(d, name)) as f:
                    j = json.load(f)
                out.update(j["sent"])
                late += j["late"]
        return out, late

    mid = first_seen(f"{d}/line.pcap")
    entry = first_seen(f"{d}/dslam-in.pcap")[False] if os.path.exists(f"{d}/dslam-in.pcap") else {}
    near, far = sent("near"), sent("far")
    res = dict(up=direction(near[0], [f"{d}/up.pcap"], mid[True], True),
               down=direction(far[0], [f"{d}/{n}" for n in sorted(os.listdir(d))
                                       if n.startswith("down-") and n.endswith(".pcap")], mid[False], False, entry))
    # How late the world sent the voice against its 20 ms clock: a late
    # sender makes a burst, which a class at its rate drains slowly.
    res["up"]["send_late_p99"], res["down"]["send_late_p99"] = pct(near[1], 99), pct(far[1], 99)
    for way in ("up", "down"):
        res[f"bulk_{way}"], res[f"bulk_{way}_note"] = bulk(f"{d}/bulk-{way}.log")
    res["dslam"] = dslam_bursts(d, entry, mid[False], down_bps, frame)
    print(json.dumps(res))


# ------------------------------------------------------------------ the host
def options():
    """The environment's choices: (settings, call counts, delay ms,
    variants, seconds per run or None). A subset, to look into one row: ROUTERD_BENCH_SETTINGS=
    ours,cake ROUTERD_BENCH_CALLS=17 (the idle and voice-only rows always
    run). Variants of ours: {name: commands run on the router after ours}.
    ROUTERD_BENCH_SECONDS=30 sets every run's length (with --quick too)."""
    env = lambda k: [x for x in os.environ.get(k, "").split(",") if x]
    try:
        variants = json.loads(os.environ.get("ROUTERD_BENCH_VARIANTS") or "{}")
        calls = [int(x) for x in env("ROUTERD_BENCH_CALLS")]
        delay_ms = int(os.environ.get("ROUTERD_BENCH_DELAY_MS", "0"))
        seconds = int(os.environ["ROUTERD_BENCH_SECONDS"]) if os.environ.get("ROUTERD_BENCH_SECONDS") else None
    except ValueError as e:
        raise BenchError(f"ROUTERD_BENCH_VARIANTS, _CALLS, _DELAY_MS or _SECONDS: {e}") from e
    if seconds is not None and seconds < 4:
        raise BenchError(f"ROUTERD_BENCH_SECONDS: {seconds} is too short (the first and last second are left out)")
    if not isinstance(variants, dict) or not all(isinstance(v, str) for v in variants.values()):
        raise BenchError('ROUTERD_BENCH_VARIANTS: not {"name": "commands", ...}')
    settings = env("ROUTERD_BENCH_SETTINGS") or SETTINGS
    unknown = [s for s in settings if s not in SETTINGS and s not in variants]
    if unknown:
        raise BenchError(f"ROUTERD_BENCH_SETTINGS: {unknown} are not one of {SETTINGS} nor a variant")
    return settings, calls, delay_ms, variants, seconds


class BenchError(Exception):
    pass


def tc_stats(host, cmd):
    """{"qdisc|class kind id": [bytes, packets, dropped]} and the largest
    packet (fq_codel maxpacket, cake max_len) of a `tc -s` listing."""
    rc, out = host.sh(f"{cmd} 2>/dev/null; true")
    stats, key, big = {}, None, 0
    for line in out:
        if line.startswith(("qdisc ", "class ")) and line.split()[1] != "ingress":
            key = " ".join(line.split()[:3])
        elif key and line.strip().startswith("Sent "):
            w = line.replace(",", " ").split()
            stats[key] = [int(w[1]), int(w[3]), int(w[w.index("(dropped") + 1])]
            key = None
        m = re.search(r"(?:maxpacket|max_len)\s+(\d+)", line)
        big = max(big, int(m.group(1))) if m else big
    return stats, big


def moved(before, after):
    """The counters that moved: 'key +P pkt, +D dropped, B B/pkt'."""
    out = []
    for k, (b, p, d) in after[0].items():
        b0, p0, d0 = before[0].get(k, [0, 0, 0])
        if p > p0 or d > d0:
            out.append(f"{k} +{p - p0} pkt +{d - d0} dropped{f', {(b - b0) // (p - p0)} B/pkt' if p > p0 else ''}")
    return "; ".join(out + ([f"largest packet {after[1]} B"] if after[1] and out else []))


def wait(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(1)
    return False


class Bench:
    # Counters read before and after each run: (label, "router"|"world", command).
    COUNTERS = [("router eth0", "router", "tc -s class show dev eth0; tc -s qdisc show dev eth0"),
                ("router ifb-eth0", "router", "tc -s class show dev ifb-eth0; tc -s qdisc show dev ifb-eth0"),
                ("router ifb4eth0", "router", "tc -s qdisc show dev ifb4eth0"),
                ("line down", "world", "ip netns exec isp tc -s qdisc show dev eth0"),
                ("line up", "world", "ip netns exec isp tc -s qdisc show dev ifb-line")]

    def counters(self):
        return [tc_stats(self.r if vm == "router" else self.w, cmd) for _, vm, cmd in self.COUNTERS]

    def __init__(self, lab, quick, choices):
        self.lab, self.w, self.r = lab, lab.world, lab.router
        self.quick = quick
        self.cases = CASES[:1] if quick else CASES
        self.settings, self.calls, self.delay_ms, self.variants, self.seconds = choices
        self.paced = os.environ.get("ROUTERD_BENCH_PACED") == "1"
        self.rows, self.notes = [], []

    def must(self, host, cmd, what, timeout=60):
        rc, out = host.sh(cmd, timeout)
        if rc != 0:
            raise BenchError(f"{what}: `{cmd}` on the {host.name} exited {rc}: {' | '.join(out[-4:])}")
        return out

    def note(self, text):
        print(f"bench: {text}", flush=True)
        self.notes.append(text)

    def prepare(self):
        w = self.w
        if not self.lab.world_con.wait_for(r"world: phone1 registered", 120):
            raise BenchError("phone1 did not register (no DHCP lease from the router?)")
        self.phones = {"phone1": lab_test.lease(w, "phone1").get("ip", "")}
        self.phones["phone2"] = lab_test.dhcp(w, "phone2")[0].get("ip", "")
        pc = lab_test.dhcp(w, "pc")[0].get("ip", "")
        if not (all(self.phones.values()) and pc):
            raise BenchError(f"no DHCP lease: phones {self.phones}, pc {pc!r}")
        for port in (5201, 5202):
            w.bg("provider", f"iperf3-{port}", f"iperf3 -s -B {BULK} -p {port}")
        self.must(w, "ip -n isp link add ifb-line type ifb && ip -n isp link set ifb-line up && "
                  "ip netns exec isp tc qdisc add dev eth0 handle ffff: ingress && "
                  "ip netns exec isp tc filter add dev eth0 parent ffff: protocol all u32 match u32 0 0 "
                  "action mirred egress redirect dev ifb-line", "the upload IFB in namespace isp")
        # The line carries packets, not aggregates: the provider's TCP is
        # sent a segment at a time (as it reaches the DSLAM from the
        # internet), and the ISP's end of the link merges nothing before the
        # upload's line emulation (IPv4 GRO has a limit of its own,
        # gro_ipv4_max_size).
        self.must(w, "ip -n provider link set down0 gso_max_segs 1 && "
                  "ip -n isp link set eth0 gro_max_size 1500 gro_ipv4_max_size 1500",
                  "segment-sized packets on the emulated line")
        # The internet's part of the round trip, both ways between the ISP
        # and the provider's and internet hosts.
        if self.delay_ms:
            self.must(w, f"ip netns exec isp tc qdisc replace dev up0 root netem delay {self.delay_ms}ms limit 100000 && "
                      f"ip netns exec provider tc qdisc replace dev down0 root handle 1: netem delay {self.delay_ms}ms "
                      "limit 100000", "the internet's delay")
        # A paced sender (ROUTERD_BENCH_PACED=1): Linux TCP spreads its
        # segments over the round trip when fq is its queue, as large
        # content servers run it; unpaced by default.
        if self.paced:
            where = "parent 1:1" if self.delay_ms else "root"
            self.must(w, f"ip netns exec provider tc qdisc replace dev down0 {where} handle 2: fq",
                      "pacing the internet's TCP")
        self.must(self.r, "cp /etc/routerd/router.toml /tmp/bench-factory.toml", "saving the router's config")

    def line(self, case):
        """The access line, on the ISP's side of the router's WAN link
        (download) and on the IFB of its ingress (upload): one HTB class at
        the line rate over a FIFO of buffer_ms at that rate (the modem's or
        DSLAM's buffer). A size table counts bytes on the line: the kernel's
        length includes the 14-byte Ethernet header, so PPPoA's 10 bytes are
        overhead -4, with ATM cells, and Ethernet's 18 are +4. Not tbf: tbf
        splits GSO packets (the router's TSO, the provider's veth) and
        charges the pieces without the size table."""
        stab = ("stab mtu 2048 tsize 2048 overhead -4 linklayer atm" if case["framing"] == "atm"
                else "stab overhead 4")
        for dev, rate in (("eth0", case["down"]), ("ifb-line", case["up"])):
            tc = "ip netns exec isp tc"
            burst = max(2 * FRAME[case["framing"]], rate // 8000)  # 2 frames or 1 ms
            # HTB cannot change its size table in place: a new root.
            self.w.sh(f"{tc} qdisc del dev {dev} root 2>/dev/null")
            self.must(self.w, f"{tc} qdisc add dev {dev} root handle 1: {stab} htb default 1 && "
                      f"{tc} class add dev {dev} parent 1: classid 1:1 htb rate {rate}bit "
                      f"burst {burst} cburst {burst} quantum {FRAME[case['framing']]} && "
                      f"{tc} qdisc add dev {dev} parent 1:1 handle 10: bfifo "
                      f"limit {rate * case['buffer_ms'] // 8000}", "the line emulation")
        self.must(self.r, f"sed '{case['sed']}' /tmp/bench-factory.toml > /tmp/bench-case.toml",
                  "the case's router config")

    def verify_line(self, case):
        """TCP goodput with the router's shaper off, against the most the
        line's framing allows (1448 bytes of data per full frame)."""
        best = {w: case[w] * 1448 / FRAME[case["framing"]] / 1e6 for w in ("up", "down")}
        got = {}
        for way, flag, port in (("up", "", 5201), ("down", "-R", 5202)):
            out = self.must(self.w, f"ip netns exec pc iperf3 -c {BULK} -p {port} {flag} -t 8 -O 2 -P 4 -J",
                            f"iperf3 {way} through the emulated line", 60)
            got[way] = json.loads("\n".join(out))["end"]["sum_received"]["bits_per_second"] / 1e6
        self.note(f"{case['name']} line, no shaping: TCP goodput up {got['up']:.2f} Mbit/s (the line allows "
                  f"{best['up']:.2f}), down {got['down']:.2f} Mbit/s (allows {best['down']:.2f})")
        # A little over is the modem buffer draining after the sender's end.
        if any(got[w] > best[w] * 1.1 for w in got):
            raise BenchError("the emulated line is not the bottleneck")

    def setting(self, name, case):
        """none: the shaper's qdiscs removed (routerd's periodic check
        restores the ruleset, not tc); cake: sqm-scripts' piece_of_cake at
        95 %; ours: `routerctl apply` of the case's config."""
        r = self.r
        r.sh("tc qdisc del dev eth0 root; tc qdisc del dev eth0 ingress; tc qdisc del dev ifb-eth0 root; "
             "ip link del ifb4eth0; true 2>/dev/null")
        if name == "ours" or name in self.variants:
            self.must(r, "routerctl apply /tmp/bench-case.toml", "routerctl apply")
            if name in self.variants:
                self.must(r, self.variants[name], f"variant {name}")
        elif name == "cake":
            up, down = case["up"] * 95 // 100_000, case["down"] * 95 // 100_000
            self.must(r, f"tc qdisc replace dev eth0 root cake bandwidth {up}kbit besteffort {case['cake']} && "
                      "ip link add ifb4eth0 type ifb && ip link set ifb4eth0 up && "
                      f"tc qdisc replace dev ifb4eth0 root cake bandwidth {down}kbit besteffort "
                      f"{case['cake']} wash ingress && tc qdisc add dev eth0 handle ffff: ingress && "
                      "tc filter add dev eth0 parent ffff: protocol all u32 match u32 0 0 "
                      "action mirred egress redirect dev ifb4eth0", "cake on the router")
        self.check_setting(name)

    def check_setting(self, name):
        rc, out = self.r.sh("tc qdisc show dev eth0; tc qdisc show dev ifb4eth0; tc class show dev eth0; "
                            "tc class show dev ifb-eth0; tc filter show dev eth0 ingress", 30)
        q = " ".join(out)
        ok = rc is not None and {
            "none": "htb" not in q and "cake" not in q and "ingress" not in q,
            "cake": "qdisc cake" in q and "ifb4eth0" in q and "htb" not in q,
            "ours": "class htb 1:10" in q and "ifb-eth0" in q and "cake" not in q}[
            "ours" if name in self.variants else name]
        if not ok:
            raise BenchError(f"the router is not (or no longer) in setting '{name}': {q[:600]}")

    # The router's shaper sends from a timer (qdisc_watchdog) whenever its
    # line is backlogged. tracefs pairs each arming of that timer with its
    # expiry; how late it ran is time the line idled for nothing.
    TRACE = "/sys/kernel/tracing"
    TIMER_ON = (f"T={TRACE}; [ -d $T/events/timer ] || mount -t tracefs nodev $T; "
                "a=$(grep ' qdisc_watchdog$' /proc/kallsyms | cut -d' ' -f1); [ -n \"$a\" ] && "
                "echo 0 > $T/tracing_on && echo > $T/trace && echo 16384 > $T/buffer_size_kb && "
                "for e in hrtimer_start hrtimer_expire_entry; do "
                "echo \"function == 0x$a\" > $T/events/timer/$e/filter && "
                "echo 1 > $T/events/timer/$e/enable || a=; done && [ -n \"$a\" ] && echo 1 > $T/tracing_on")
    # Lateness in µs of each expiry (now - expires of the timer's last
    # arming), sorted; prints: count p50 p99 max overruns.
    TIMER_OFF = (f"T={TRACE}; echo 0 > $T/tracing_on; "
                 "busybox awk '{h=$0; sub(/.*hrtimer=/, \"\", h); sub(/ .*/, \"\", h)} "
                 "/hrtimer_start:/ {e=$0; sub(/.* expires=/, \"\", e); sub(/ .*/, \"\", e); x[h]=e} "
                 "/hrtimer_expire_entry:/ && (h in x) {n=$0; sub(/.* now=/, \"\", n); sub(/ .*/, \"\", n); "
                 "print int((n - x[h]) / 1000); delete x[h]}' $T/trace | sort -n | "
                 "busybox awk '{v[NR]=$1} END {print NR, v[int(NR*0.5)+1]+0, v[int(NR*0.99)+1]+0, v[NR]+0}' && "
                 "cat $T/per_cpu/cpu*/stats | busybox awk '/^overrun:/ {o+=$2} END {print o+0}'; "
                 "for e in hrtimer_start hrtimer_expire_entry; do echo 0 > $T/events/timer/$e/enable; done; "
                 "echo > $T/trace")

    def timer_lateness(self, host):
        """{count, p50, p99, max} in ms of how late the shaper timers of
        `host` ran during the run (the router's shaper; the world's: the
        line emulation), or None if they could not be traced."""
        rc, out = host.sh(self.TIMER_OFF, 120)
        w = " ".join(out).split()
        if rc != 0 or len(w) != 5 or not all(x.lstrip("-").isdigit() for x in w):
            self.note(f"the shaper's timer could not be traced: {' | '.join(out[-3:])}")
            return None
        n, p50, p99, top, overrun = (int(x) for x in w)
        if overrun:
            self.note(f"the timer trace lost {overrun} events")
        return dict(count=n, p50=p50 / 1000, p99=p99 / 1000, max=top / 1000) if n else None

    def throttled(self):
        """How often the internet's fq has held a segment back to pace it
        (0 without ROUTERD_BENCH_PACED)."""
        if not self.paced:
            return 0
        m = re.search(r"\bthrottled (\d+)", self.w.out("ip netns exec provider tc -s qdisc show dev down0 | grep gc"))
        return int(m.group(1)) if m else 0

    def cpu(self):
        """(world, router) /proc/stat totals and idle times, the host's load."""
        def stat(host):
            v = [int(x) for x in host.out("head -1 /proc/stat").split()[1:]]
            return sum(v), v[3]
        with open("/proc/loadavg") as f:
            return stat(self.w), stat(self.r), float(f.read().split()[0])

    def run(self, case, setting, calls, loaded):
        w, d = self.w, f"{LOG}/bench"
        t = self.seconds or (10 if self.quick else case["seconds"])
        self.must(w, f"rm -rf {d}; mkdir -p {d}", "the run's directory")
        before, cpu0, paced0 = self.counters(), self.cpu(), self.throttled()
        caps = [("provider", "up", "down0", f"udp and dst host {FAR} and dst portrange {FAR_PORT}-{FAR_PORT + 400}")]
        caps += [(p, f"down-{p}", "lan0", f"udp and src host {FAR}") for p in self.phones]
        # The ISP's end of the WAN link: after the router's queue (up), after the DSLAM's (down).
        caps += [("isp", "line", "eth0", f"udp and host {FAR}")]
        # Where the download enters the ISP from the internet: splits the
        # DSLAM's part into the world's sending and the DSLAM's own queue.
        caps += [("isp", "dslam-in", "up0", f"udp and src host {FAR}")]
        if loaded:  # the download's TCP there, and its acknowledgements before the modem
            caps += [("isp", "dslam-tcp", "up0", f"tcp and host {BULK} and port 5202"),
                     ("isp", "acks-line", "eth0", f"tcp and dst host {BULK} and dst port 5202")]
        for ns, name, iface, expr in caps:
            w.bg(ns, f"bench/{name}-tcpdump", f"tcpdump -i {iface} -n -s 96 -B 4096 -w {d}/{name}.pcap {expr}")
        for ns, name, *_ in caps:
            if not wait(lambda: "listening on" in w.out(f"cat {d}/{name}-tcpdump.log"), 15):
                raise BenchError(f"tcpdump in {ns}: {w.out(f'cat {d}/{name}-tcpdump.log')}")
        if loaded:
            for way, flag, port in (("up", "", 5201), ("down", "-R", 5202)):
                w.bg("pc", f"bench/bulk-{way}", f"iperf3 -c {BULK} -p {port} {flag} -t {t + 6} -O 3 -P 4 -J")
            time.sleep(3)  # TCP out of slow start, the modem's buffer full
        traced = [h.sh(self.TIMER_ON, 30)[0] == 0 for h in (self.r, self.w)]
        share = {p: (calls + i) // len(self.phones) for i, p in enumerate(self.phones)}
        for role in ("far", "near"):
            first = 0
            for p, n in share.items():
                ns, local, remote = ("provider", FAR, "-") if role == "far" else (p, self.phones[p], FAR)
                # The sending loop runs at real-time priority (`realtime`).
                w.bg(ns, f"bench/{role}-{p}",
                     f"python3 {ME} send {role} {local} {remote} {first} {n} {calls} {t} {d}/{role}-{p}.json")
                first += n
            time.sleep(1)
        time.sleep(t + 1)
        done = lambda: w.out(f"ls {d}/*.json 2>/dev/null | wc -l").strip() == str(2 * len(share))
        if not wait(done, 60):
            raise BenchError(f"the voice streams did not finish: {w.out(f'tail -n 3 {d}/*r-*.log')}")
        if not wait(lambda: w.sh("pgrep -f 'iperf3 -c'")[0] != 0, 30):
            raise BenchError("iperf3 did not finish")
        w.sh("sleep 1; pkill -INT -f 'tcpdump.*bench/'; sleep 1")
        after, cpu1 = self.counters(), self.cpu()
        if self.paced and loaded:
            self.note(f"{case['name']}, {setting}, {calls} calls: the internet's fq held a TCP segment back "
                      f"{self.throttled() - paced0} times to pace it")
        timer = [self.timer_lateness(h) if on else None for h, on in zip((self.r, self.w), traced)]
        res = json.loads(self.must(w, f"python3 {ME} summarize {d} {case['down']} {FRAME[case['framing']]}", "summarizing the run", 300)[-1])
        res["seconds"] = t
        busy = [100 - 100 * (b[1] - a[1]) / max(1, b[0] - a[0]) for a, b in zip(cpu0[:2], cpu1[:2])]
        res["cpu"] = dict(world=busy[0], router=busy[1], host_load=cpu1[2])
        res["timer"], res["line_timer"] = timer
        # A capture that lost packets (the VM overloaded) overstates the loss.
        res["capture_lost"] = 0
        for name in [c[1] for c in caps]:
            lost = w.out(f"sed -n 's/ packets dropped by kernel//p' {d}/{name}-tcpdump.log").strip()
            if lost != "0":
                self.note(f"{case['name']}, {setting}, {calls} calls: the capture {name} lost {lost or '?'} packets")
                res["capture_lost"] += int(lost) if lost.isdigit() and name not in ("line", "dslam-in", "dslam-tcp", "acks-line") else 0
        self.check_setting(setting)
        label = f"{case['name']}, {setting}, {calls} calls{'' if loaded else ', idle'}"
        for way in ("up", "down"):
            self.note(f"{label}: the world sent the voice {way} up to {res[way]['send_late_p99']} ms late "
                      f"(p99); largest delay each second, ms: {res[way].pop('per_second')}; "
                      f"latest sending each second, ms: {res[way].pop('late_per_second')}")
            lost = res[way].pop("lost_per_second")
            if lost:
                self.note(f"{label}: voice lost {way} in second (of {t}): count: {lost}")
        self.note(f"{label}: download voice p99 {res['down']['to_line_p99']} ms from its sender to the DSLAM, "
                  f"{res['down']['line_queue_p99']} ms in the DSLAM's queue")
        b = res.get("dslam")
        if b and b["segments"]:
            one = "-" if b["burst_one_flow"] is None else f"{b['burst_one_flow']:.0%}"
            self.note(f"{label}: the DSLAM got {b['segments']} download segments, {b['burst_segments_share']:.0%} "
                      f"of them in {b['bursts']} bursts of {BURST_MIN} or more (p50/p99/max {b['burst_p50']}/"
                      f"{b['burst_p99']}/{b['burst_max']}), {one} of the bursts from one flow; "
                      f"acknowledgements in the ms before a burst: "
                      f"{ms(b['burst_acks_before'])} (before any segment: {ms(b['acks_before_any_segment'])}); "
                      f"acknowledgement bunches p99: {b['ack_bunch_router_p99']} as the router sent them, "
                      f"{b['ack_bunch_internet_p99']} at the internet; {b['waited']} voice packets waited over "
                      f"{DSLAM_WAIT_MS} ms in the DSLAM, behind {ms(b['ahead_segments'])} segments of "
                      f"{ms(b['ahead_flows'])} flows")
        print(f"bench: {label}: {json.dumps(res)}", flush=True)
        for (where, *_), b, a in zip(self.COUNTERS, before, after):
            if moved(b, a):
                self.note(f"{label}: {where}: {moved(b, a)}")
        for way in ("up", "down"):
            if res[f"bulk_{way}_note"]:
                self.note(f"{label}: bulk {way} approximate ({res[f'bulk_{way}_note']})")
            if res[way]["sent"] < calls * 50 * t * 0.98:
                self.note(f"{label}: the world sent only {res[way]['sent']} of {calls * 50 * t} voice packets {way}")
        return res

    @staticmethod
    def limit(case):
        """The target's added delay, ms: 1.5 full frames at the upload rate."""
        return 1.5 * FRAME[case["framing"]] * 8 / case["up"] * 1000

    def table(self):
        """The results, and where the voice waited (p99 of each part) with
        how busy the machines were."""
        two = lambda r, k, fmt=ms: f"{fmt(r['up'][k])} / {fmt(r['down'][k])}"
        mbit = lambda r, w: "-" if r[f"bulk_{w}"] is None else f"{'~' * bool(r[f'bulk_{w}_note'])}{r[f'bulk_{w}']:.2f}"
        main = ["| line | setting | calls | voice loss up/down % | one-way p50 up/down ms | p99 up/down ms "
                "| added p99 up/down ms | jitter up/down ms | bulk up/down Mbit/s | target |"]
        split = ["| line | setting | calls | p99 in the router up/down ms | p99 in the modem/DSLAM up/down ms "
                 "| voice sent late p99 up/down ms | p99 in seconds sent on time up/down ms (share) "
                 "| shaper timer late p99/max ms: router / line "
                 "| CPU busy world/router % | host load |"]
        for t in (main, split):
            t.append("|" + "---|" * (t[0].count("|") - 1))
        idle = lambda row: "idle" in row[1]
        base = {}
        for case, _, _, res in filter(idle, self.rows):  # the quieter idle run
            if case["name"] not in base or max(res[w]["p99"] for w in ("up", "down")) < \
                    max(base[case["name"]][w]["p99"] for w in ("up", "down")):
                base[case["name"]] = res
        names = SETTINGS + list(self.variants)
        order = lambda row: (CASES.index(row[0]), not idle(row), row[2], names.index(row[1].split(",")[0]))
        for case, setting, calls, res in sorted(self.rows, key=order):
            b = base.get(case["name"])
            added = {w: res[w]["p99"] - b[w]["p99"] if b else None for w in ("up", "down")}
            ok = res["up"]["loss"] == 0 and res["down"]["loss"] == 0 and b and max(added.values()) <= self.limit(case)
            if idle((case, setting)):
                verdict = "(baseline)" if res is b else "(idle)"
                added = {"up": None, "down": None}
            else:
                verdict = "meets" if ok else "misses"
            if res["capture_lost"]:
                verdict += f" (capture lost {res['capture_lost']})"
            sent = min(res[w]["sent"] for w in ("up", "down")) / (calls * 50 * res["seconds"])
            if sent < 0.98:  # the world VM could not generate the calls: no verdict
                verdict = f"n/a: the world sent {sent:.0%} of the voice"
            head = f"| {case['name']} | {setting} | {calls} "
            main.append(head + f"| {two(res, 'loss', lambda x: f'{x:.2f}')} | {two(res, 'p50')} | {two(res, 'p99')} "
                        f"| {ms(added['up'])} / {ms(added['down'])} | {two(res, 'jitter')} "
                        f"| {mbit(res, 'up')} / {mbit(res, 'down')} | {verdict} |")
            cpu = res["cpu"]
            late = " / ".join(f"{tm['p99']:.1f}, {tm['max']:.1f}" if tm else "-"
                              for tm in (res.get("timer"), res.get("line_timer")))
            clock = " / ".join(f"{ms(res[w].get('on_clock_p99'))} ({res[w].get('on_clock_share', 0):.0%})"
                               for w in ("up", "down"))
            split.append(head + f"| {two(res, 'router_p99')} | {two(res, 'line_p99')} | {two(res, 'send_late_p99')} "
                         f"| {clock} | {late} "
                         f"| {cpu['world']:.0f} / {cpu['router']:.0f} | {cpu['host_load']:.1f} |")
        return "\n".join(main) + "\n\n" + "\n".join(split)

    def main(self):
        self.prepare()
        try:
            for case in self.cases:
                limit = self.limit(case)
                self.line(case)
                self.setting("none", case)
                self.verify_line(case)
                self.rows.append((case, "none, idle", case["idle"], self.run(case, "none", case["idle"], False)))
                for setting in SETTINGS + list(self.variants):
                    if setting not in self.settings:
                        continue
                    if setting != "none":
                        self.setting(setting, case)
                    for calls in case["calls"]:
                        if self.calls and calls not in self.calls:
                            continue
                        self.rows.append((case, setting, calls, self.run(case, setting, calls, True)))
                # Ours with the calls and no bulk: what the shaper itself adds.
                calls = case["voice_only"]
                self.setting("ours", case)
                self.rows.append((case, "ours, voice only", calls, self.run(case, "ours", calls, False)))
                # Idle again at the end: the baseline is the quieter of the two.
                self.setting("none", case)
                self.rows.append((case, "none, idle at the end", case["idle"],
                                  self.run(case, "none", case["idle"], False)))
                self.note(f"{case['name']} target: no voice loss, added p99 one-way delay <= {limit:.1f} ms "
                          f"(1.5 x one {FRAME[case['framing']]}-byte frame at {case['up'] / 1e6:g} Mbit/s)")
        finally:
            print("\n" + self.table() + "\n", flush=True)
            self.r.sh("tc qdisc del dev eth0 root; tc qdisc del dev eth0 ingress; ip link del ifb4eth0; "
                      "routerctl apply /tmp/bench-factory.toml > /dev/null")
            self.w.sh("pkill -f 'bench_voice.py send'; pkill -f 'iperf3 -c'; pkill -INT -f 'tcpdump.*bench/'; "
                      "ip netns exec isp tc qdisc del dev eth0 root; ip netns exec isp tc qdisc del dev eth0 ingress; "
                      "ip -n isp link del ifb-line")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "send":
        a = sys.argv[2:]
        return send(a[0], a[1], a[2], int(a[3]), int(a[4]), int(a[5]), float(a[6]), a[7])
    if len(sys.argv) > 1 and sys.argv[1] == "summarize":
        return summarize(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--timeout", type=float, default=150.0)
    ap.add_argument("--quick", action="store_true", help="10 s runs, the ADSL line only")
    args = ap.parse_args()
    try:
        choices = options()
    except BenchError as e:
        print(f"bench: {e}", flush=True)
        return 2
    global lab_test
    import lab_test  # the host's side only: it needs qemu-tests/vm.py

    lab = lab_test.Lab(args)
    if not lab.boot():
        return 1
    bench = Bench(lab, args.quick, choices)
    started = time.monotonic()
    try:
        bench.main()
    except BenchError as e:
        print(f"bench: FAILED: {e}", flush=True)
        return 1
    print(f"bench: done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
