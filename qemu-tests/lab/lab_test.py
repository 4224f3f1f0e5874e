#!/usr/bin/env python3
"""The lab: proves the provider's network specification from outside the router.

Started by run.sh, which starts two QEMU machines that wait for their
serial consoles: the router (its disk image, unmodified) and the world
(qemu-tests/lab/world/init: the ISP, the provider's servers, the phones,
the PC and the Wi-Fi-calling device, each a network namespace). This
script connects both consoles (which powers both machines on), waits for
them, and runs the checks: commands on the world's console make real
traffic (sipp, kamailio, chrony, nmap, DHCP, HTTP) and capture what
crosses the wire with tcpdump; the router's console is used only to read
its state (conntrack, tc) and to kill routerd.

Every check names the requirement it proves (../shared requirements: "spec
F3"). Prints one line per check and "lab: N passed, N failed"; exits 1 if a
check failed. Timings go to timings.txt in the work directory.
"""

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from vm import Checks, Console  # noqa: E402

W = "/lab/world"  # the lab's scripts inside the world VM
SIP = f"{W}/sip"
LOG = "/tmp/world"  # the world's scratch directory
SIP_SERVER = "185.72.208.10"
ECHO_UA = "185.72.208.20"
CALLER = "185.72.208.21"
EPDG = "195.41.220.240"
IDLE_WAIT = 290  # spec F3: a UDP flow idle this long must still pass


class Host:
    """A console with helpers for running commands in the world's namespaces."""

    def __init__(self, console, name):
        self.con = console
        self.name = name

    def sh(self, command, timeout=30):
        rc, out = self.con.run(command, timeout)
        return rc, out

    def ready(self, timeout=60):
        """True once the console's shell runs commands (input before that is
        lost); turns its echo off."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sh("stty -F /dev/ttyS0 -echo", 2)[0] == 0:
                return True
        return False

    def out(self, command, timeout=30):
        return "\n".join(self.sh(command, timeout)[1])

    def ns(self, ns, command, timeout=30):
        return self.sh(f"ip netns exec {ns} {command}", timeout)

    def bg(self, ns, name, command):
        """Starts `command` in namespace `ns` in the background; output in LOG/name.log."""
        self.sh(f"ip netns exec {ns} setsid {command} > {LOG}/{name}.log 2>&1 < /dev/null &")

    def capture(self, ns, name, iface, expr):
        """Starts tcpdump; stop() it to read the packets back."""
        self.sh(f"rm -f {LOG}/{name}.pcap")
        self.bg(ns, f"{name}-tcpdump", f"tcpdump -i {iface} -n -U --immediate-mode -s 0 -w {LOG}/{name}.pcap {expr}")
        # tcpdump prints "listening on" once the capture runs.
        for _ in range(50):
            if "listening on" in self.out(f"cat {LOG}/{name}-tcpdump.log"):
                return
            time.sleep(0.1)

    def stop_capture(self, name):
        self.sh(f"pkill -INT -f 'tcpdump.*{LOG}/{name}.pcap'; sleep 0.5")

    def packets(self, name, expr="", flags="-tt"):
        """The packets of a capture, one line each (tcpdump -r)."""
        _, out = self.sh(f"tcpdump -r {LOG}/{name}.pcap -n {flags} {expr} 2>/dev/null", 60)
        return out


def sip_messages(host, name):
    """The SIP messages of a capture: (first line, the message's bytes in hex)."""
    # tcpdump -x prints each packet's bytes; the SIP text starts after the
    # IP and UDP headers.
    lines = host.packets(name, "udp port 5060", "-tt -x")
    msgs, cur = [], None
    for line in lines:
        if re.match(r"^\d+\.\d+ IP ", line):
            cur = []
            msgs.append(cur)
        elif cur is not None and line.strip().startswith("0x"):
            cur.extend(line.split(":", 1)[1].split())
    out = []
    for words in msgs:
        raw = bytes.fromhex("".join(words))
        ihl = (raw[0] & 0x0F) * 4
        payload = raw[ihl + 8 :]
        first = payload.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        out.append((first, payload))
    return out


def header(payload, name):
    for line in payload.split(b"\r\n"):
        if line.lower().startswith(name.lower().encode() + b":"):
            return line.split(b":", 1)[1].strip().decode("utf-8", "replace")
    return ""


def lease(world, host):
    _, out = world.sh(f"cat {LOG}/{host}.lease 2>/dev/null")
    return dict(l.split("=", 1) for l in out if "=" in l)


def dhcp(world, host):
    """Runs the host's DHCP client once: its lease (empty if none) and the
    server's DHCP replies as tcpdump decodes them."""
    world.capture(host, f"{host}-dhcp", "lan0", "udp port 67 or udp port 68")
    world.ns(host, f"env HOST={host} busybox udhcpc -i lan0 -f -q -n -t 8 -T 2 -O tftp -O ntpsrv -s {W}/dhcp-event", 40)
    world.stop_capture(f"{host}-dhcp")
    return lease(world, host), world.packets(f"{host}-dhcp", "udp src port 67", "-vv")


def sipp(world, ns, scenario, local_ip, extra="", timeout=60, remote=SIP_SERVER):
    """Runs a sipp scenario to its end; its exit status. A failed run prints
    the end of sipp's output and error file, to tell why."""
    log, err = f"{LOG}/{ns}-{scenario}.log", f"{LOG}/{ns}-{scenario}.err"
    rc, out = world.ns(
        ns,
        f"sipp {remote} -sf {SIP}/{scenario} -i {local_ip} -m 1 -nostdin -timeout {timeout}s "
        f"-trace_err -error_file {err} {extra} > {log} 2>&1; "
        f"echo sipp-exit=$?",
        timeout + 15,
    )
    code = next((int(l.split("=")[1]) for l in out if l.startswith("sipp-exit=")), None)
    if code != 0:
        tail = world.out(f"tail -n 5 {log} {err} 2>&1")
        print(f"lab: sipp {scenario} in {ns} exited {code}:\n{tail}", flush=True)
    return code


class Lab:
    def __init__(self, args):
        self.args = args
        self.checks = Checks()
        self.timings = []
        self.wan = ""
        self.phone_ip = {}

    def check(self, spec, name, ok, detail=""):
        return self.checks.check(f"[{spec}] {name}", ok, detail)

    # ------------------------------------------------------------------ boot
    def boot(self):
        a = self.args
        self.world_con = Console(os.path.join(a.workdir, "world.sock"), os.path.join(a.workdir, "world.log"))
        self.router_con = Console(os.path.join(a.workdir, "router.sock"), os.path.join(a.workdir, "router.log"))
        self.t0 = time.monotonic()
        self.world = Host(self.world_con, "world")
        self.router = Host(self.router_con, "router")
        ready = self.world_con.wait_for(r"world: ready", a.timeout)
        self.timings.append(("world ready", ready[0] if ready else None))
        if not self.check("lab", "the world VM is up (ISP, provider, office)", ready is not None):
            return False
        # The console's shell reads only once it runs: until then input is lost.
        if not self.check("lab", "the world's console answers", self.world.ready()):
            return False
        applied = self.router_con.wait_for(r"applied and verified plan=(\w+)", a.timeout)
        self.timings.append(("router: routerd applied", applied[0] if applied else None))
        if not self.check("lab", "the router boots and routerd applies its plan", applied is not None):
            return False
        bound = self.router_con.wait_for(r"WAN DHCP event interface=eth0 event=Bound", 60)
        self.timings.append(("router: WAN lease", bound[0] if bound else None))
        if not self.check("lab", "the router's console answers", self.router.ready()):
            return False
        rc, out = self.router.sh("routerctl status")
        m = next((re.search(r"address (\S+)/", l) for l in out if l.strip().startswith("address")), None)
        self.wan = m.group(1) if m else ""
        return self.check("spec F1", "the ISP's DHCP gives the router its WAN address", self.wan.startswith("198.51.100."), self.wan)

    # ------------------------------------------------------------- the checks
    def first_register(self):
        hit = self.world_con.wait_for(r"world: phone1 registered", 120)
        t = hit[0] if hit else None
        self.timings.append(("power-on to phone1's first REGISTER 200 OK", t))
        self.check("spec F1", "power-on to the first phone's successful REGISTER", hit is not None,
                   f"{t:.1f} s under TCG" if t else "no successful REGISTER within 120 s")

    def phone_dhcp_dns_ntp(self):
        l, wire = dhcp(self.world, "phone2")
        self.phone_ip["phone2"] = l.get("ip", "")
        self.phone_ip["phone1"] = lease(self.world, "phone1").get("ip", "")
        # busybox's client refuses a URL in option 66 (it wants a host
        # name): read the option off the wire instead.
        opt66 = next((re.search(r'TFTP \(66\), length \d+: "([^"]*)"', x) for x in wire if "TFTP (66)" in x), None)
        self.check("spec F4", "a phone on VLAN 20 gets a lease: router and DNS 10.20.0.1, option 66",
                   l.get("ip", "").startswith("10.20.0.") and l.get("router") == "10.20.0.1"
                   and l.get("dns") == "10.20.0.1" and opt66 is not None and opt66.group(1).removesuffix("^@") == "http://config.ipnordic.dk/",
                   f"ip={l.get('ip')} router={l.get('router')} dns={l.get('dns')} option 66 {opt66.group(1) if opt66 else 'missing'}")
        rc, out = self.world.ns("phone2", "getent hosts sip.ipnordic.dk")
        queried = self.world.out(f"grep -c 'query.*sip.ipnordic.dk from {self.wan}' {LOG}/dns.log")
        self.check("spec F4", "the phone resolves sip.ipnordic.dk through the router's DNS",
                   rc == 0 and out and out[0].split()[0] == SIP_SERVER and queried.strip() not in ("", "0"),
                   f"{' '.join(out)}; the provider's DNS saw {queried.strip()} queries from the WAN address")
        rc, out = self.world.ns("phone2", f"python3 {W}/peer.py ntp sip.ipnordic.dk")
        m = re.search(r"from (\S+): stratum (\d+)", " ".join(out))
        self.check("port table", "the phone gets the time from sip.ipnordic.dk (NTP 123/udp, chrony)",
                   rc == 0 and m is not None and m.group(1) == SIP_SERVER and 1 <= int(m.group(2)) < 16,
                   " ".join(out))

    def router_ntp(self):
        """Option 42 names the router: it serves the phones the time it has
        from sip.ipnordic.dk (chrony), one stratum below it."""
        l = lease(self.world, "phone2")
        out, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline:
            out = self.world.out(f"ip netns exec phone2 python3 {W}/peer.py ntp 10.20.0.1")
            if "stratum 9," in out:
                break
            time.sleep(2)
        self.check("spec F4, port table", "the router serves the phones NTP (option 42) from sip.ipnordic.dk's time",
                   l.get("ntpsrv") == "10.20.0.1" and "stratum 9," in out, f"option 42 {l.get('ntpsrv')}; {out}")

    def register_byte_identical(self):
        ip = self.phone_ip["phone2"]
        self.world.capture("phone2", "reg-phone", "lan0", "udp port 5060")
        self.world.capture("provider", "reg-prov", "down0", "udp port 5060")
        code = sipp(self.world, "phone2", "phone-register.xml", ip, "-s 1002")
        self.world.stop_capture("reg-phone")
        self.world.stop_capture("reg-prov")
        sent = [p for f, p in sip_messages(self.world, "reg-phone") if f.startswith("REGISTER")]
        got = [p for f, p in sip_messages(self.world, "reg-prov") if f.startswith("REGISTER")]
        ok_back = [f for f, _ in sip_messages(self.world, "reg-phone") if f.startswith("SIP/2.0 200")]
        self.check("spec F1", "a phone registers with the provider's registrar (sipp, kamailio)",
                   code == 0 and ok_back, f"sipp exit {code}, {len(ok_back)} 200 OK back at the phone")
        same = bool(sent) and len(sent) == len(got) and all(a == b for a, b in zip(sent, got))
        via = header(got[0], "Via") if got else ""
        contact = header(got[0], "Contact") if got else ""
        self.check("spec F2", "the REGISTER reaches the registrar byte-identical (no SIP ALG)",
                   same and ip in via and ip in contact,
                   f"{len(sent)} sent, {len(got)} arrived; Via {via}; Contact {contact}")

    def call(self):
        ip = self.phone_ip["phone2"]
        self.world.capture("phone2", "call", "lan0", "udp")
        code = sipp(self.world, "phone2", "phone-call.xml", ip, "-s 1002 -mp 16384", 60)
        self.world.stop_capture("call")
        out_rtp = self.world.packets("call", f"src host {ip} and src port 16384 and dst host {ECHO_UA}")
        in_rtp = self.world.packets("call", f"src host {ECHO_UA} and dst host {ip} and dst port 16384")
        self.check("spec F1, F7", "a phone calls through the NAT with two-way RTP (echo)",
                   code == 0 and len(out_rtp) > 100 and len(in_rtp) > 100,
                   f"sipp exit {code}; RTP {len(out_rtp)} sent, {len(in_rtp)} came back")

    def incoming_call(self):
        """The provider calls a registered phone: the INVITE reaches it
        through the NAT mapping of its REGISTER. A second attempt (another
        user) if the first fails; the detail says which one passed."""
        ip = self.phone_ip["phone2"]
        tries = []
        for user in ("1003", "1004"):
            cid = f"call-to-{user}"
            self.world.bg("phone2", f"answer-{user}",
                          f"sipp {SIP_SERVER} -sf {SIP}/phone-answer.xml -i {ip} -p 5070 -mp 16600 -s {user} "
                          f"-cid_str {cid} -m 1 -nostdin -timeout 60s -trace_err -error_file {LOG}/answer-{user}.err")
            # The call goes out once the registrar has the phone's binding.
            registered, deadline = False, time.monotonic() + 30
            while not registered and time.monotonic() < deadline:
                registered = self.world.sh(f"grep -q 'REGISTER {user} from' {LOG}/kamailio.log")[0] == 0
                time.sleep(0.5)
            # sipp matches the incoming INVITE to the phone's scenario by its Call-ID.
            code = sipp(self.world, "provider", "provider-call.xml", CALLER, f"-s {user} -cid_str {cid}", 40)
            self.world.sh(f"sleep 1; pkill -f 'sipp.*{cid}'")
            err = self.world.out(f"tail -c 300 {LOG}/answer-{user}.err 2>/dev/null | tr '\\n' ' '")
            tries.append(f"{user}: registered {registered}, caller exit {code}" + (f", phone: {err}" if err else ""))
            if registered and code == 0:
                break
        self.check("spec F1", "a call from the provider reaches the phone behind NAT (no port forward)",
                   registered and code == 0, "; ".join(tries))

    def capacity(self):
        rc, out = self.router.sh("routerctl capacity --down 5M --up 2M --framing adsl-pppoa")
        text = "\n".join(out)
        spec = re.search(r"^(\d+) calls at the provider's 100\.0 kbit/s", text, re.M)
        real = re.search(r"^(\d+) calls with real G\.711 framing: .* take ([\d.]+) kbit/s", text, re.M)
        wifi = re.search(r"^(\d+) Wi-Fi calls at 128\.0 kbit/s", text, re.M)
        kept = re.search(r"^(\d+) calls protected from bulk traffic by the shaper", text, re.M)
        self.check("spec B1, B2, B4", "routerctl capacity on the router: 5/2 Mbit ADSL carries 20 calls at 100 kbit/s; "
                   "fewer with ATM framing, fewer again under the shaper",
                   rc == 0 and spec and spec.group(1) == "20" and real and int(real.group(1)) < 20
                   and float(real.group(2)) > 100 and wifi and wifi.group(1) == "15"
                   and kept and int(kept.group(1)) < int(real.group(1)),
                   " | ".join(out[1:5]))

    def port_table(self):
        w = self.world
        rc, out = w.ns("phone2", "busybox wget -q -O - -T 5 http://config.ipnordic.dk/1001.cfg")
        self.check("port table", "the phone fetches its provisioning file from option 66's server (HTTP 80)",
                   rc == 0 and "sip_server=sip.ipnordic.dk" in out, " ".join(out)[:80])
        ports = {f"{name}:{port}": w.out(f"ip netns exec phone2 python3 {W}/peer.py tcp {name} {port} 3")
                 for name, port in (("prov.ipnordic.dk", 443), ("firmware.ipnordic.dk", 80),
                                    ("sip.ipnordic.dk", 5060), ("sip.ipnordic.dk", 5061))}
        self.check("port table, spec F5", "the phone reaches the port table's TCP services (443, 80, 5060, 5061)",
                   all(v == "open" for v in ports.values()), str(ports))

    def vendor_provisioning(self):
        """The vendor's name resolves through the router; its address opens
        for the phones on 80/443 only after that, and follows the name when
        it moves."""
        w = self.world

        def resolve():
            rc, out = w.ns("phone2", "getent hosts provisioning.snom.com")
            return out[0].split()[0] if rc == 0 and out else ""

        def tcp(ns, ip, port):
            return w.out(f"ip netns exec {ns} python3 {W}/peer.py tcp {ip} {port} 3")

        before = tcp("phone2", "203.0.113.80", 443)
        first = resolve()
        after = {p: tcp("phone2", first, p) for p in (80, 443)}
        self.check("vendor provisioning", "a phone reaches provisioning.snom.com on 80/443 once resolved through the router",
                   before.startswith("closed") and first == "203.0.113.80" and all(v == "open" for v in after.values()),
                   f"before the lookup: {before}; resolved {first}; then {after}")
        w.sh(f"echo '203.0.113.81 provisioning.snom.com' > {LOG}/vendor-hosts; pkill -HUP -f provider-dns.conf; sleep 0.5")
        moved_before = tcp("phone2", "203.0.113.81", 443)
        moved = resolve()
        moved_after = tcp("phone2", moved, 443) if moved else ""
        self.check("spec O2", "the vendor's name moves to a new address: the phone follows it",
                   moved_before.startswith("closed") and moved == "203.0.113.81" and moved_after == "open",
                   f"new address before the lookup: {moved_before}; resolved {moved}; then {moved_after}")
        other_phone = tcp("phone2", "203.0.113.99", 443)
        other_pc = tcp("pc", "203.0.113.99", 443)
        self.check("spec F5", "elsewhere on the internet: refused to the phone, open to the PC",
                   other_phone.startswith("closed") and other_pc == "open", f"phone: {other_phone}; PC: {other_pc}")

    def pc_software(self):
        w = self.world
        got = {f"{h}:{p}": w.out(f"ip netns exec pc python3 {W}/peer.py tcp {h} {p} 3")
               for h, p in (("185.72.208.30", 80), ("80.63.32.200", 80), ("win9.ipnordic.dk", 4058),
                            ("lb-prod.ipnordic.dk", 443))}
        self.check("spec S1, S2, S3", "the PC reaches the provider's ranges, the Communicator (4058) and lb-prod (443)",
                   all(v == "open" for v in got.values()), str(got))

    def ipv6_from_the_wan(self):
        """The factory config has no IPv6 on the WAN (wan.ipv6 = false): the
        router must not answer IPv6 there at all, and whatever answers must
        have nothing open."""
        router_ll = "fe80::5054:ff:fe00:101"  # from the WAN port's MAC
        _, pings = self.world.ns("isp", "busybox ping -6 -c 2 -W 2 ff02::1%eth0")
        answered = [l for l in pings if router_ll in l]
        rc, out = self.world.ns("isp", f"nmap -6 -n -Pn -sS --top-ports 1000 --min-rate 2000 --max-retries 1 {router_ll}%eth0", 300)
        open_tcp = [l for l in out if re.match(r"^\d+/tcp\s+open\b", l)]
        summary = next((l for l in out if "hosts up" in l or "Not shown" in l or "scanned ports" in l), "")
        self.check("spec O1", "IPv6 from the WAN: the router answers nothing (all-nodes ping, nmap of its link-local address)",
                   rc == 0 and not answered and not open_tcp and summary != "",
                   f"all-nodes ping answers from the router: {len(answered)}; nmap: {summary}")

    def conntrack_timeouts(self):
        ip = self.phone_ip["phone2"]
        # A live SIP flow and an RTP flow, then read the router's table.
        self.world.ns("phone2", f"python3 {W}/peer.py send-udp {SIP_SERVER} 5060 5070")
        self.world.ns("phone2", f"python3 {W}/peer.py send-udp {ECHO_UA} 10002 16390")
        _, out = self.router.sh(f"conntrack -L -p udp -s {ip} 2>/dev/null")
        flows = [l for l in out if "sport=5070" in l or "sport=16390" in l]
        timeouts = [int(l.split()[2]) for l in flows if len(l.split()) > 2 and l.split()[2].isdigit()]
        self.check("spec F3", "the router's conntrack holds phone SIP/RTP flows >= 300 s",
                   len(timeouts) == 2 and min(timeouts) >= 300, f"timeouts {timeouts}")

    def start_idle(self):
        self.world.bg("provider", "idle-serve", f"python3 {W}/peer.py idle-serve {ECHO_UA} 20000 {IDLE_WAIT}")
        time.sleep(1)
        self.world.bg("phone1", "idle-client", f"python3 {W}/peer.py idle-client {ECHO_UA} 20000 17000 {IDLE_WAIT + 60}")
        self.idle_started = time.monotonic()

    def finish_idle(self):
        left = self.idle_started + IDLE_WAIT + 15 - time.monotonic()
        if left > 0:
            time.sleep(left)
        out = self.world.out(f"cat {LOG}/idle-client.log {LOG}/idle-serve.log")
        self.check("spec F3", f"a provider packet after {IDLE_WAIT} s of silence reaches the phone",
                   "answer after" in out, out.replace("\n", "; "))

    def from_the_wan(self):
        w = self.world
        rc, out = w.ns("isp", f"busybox ping -c 3 -W 2 {self.wan}")
        self.check("spec F6", "ICMP from the WAN: the router answers ping", rc == 0, out[-2] if len(out) > 1 else "")
        rc, out = w.ns("isp", f"nmap -n -Pn -sS -p- --min-rate 3000 --max-retries 1 {self.wan}", 300)
        open_tcp = [l for l in out if re.match(r"^\d+/tcp\s+open\b", l)]
        summary = next((l for l in out if "Not shown" in l or "All 65535" in l), "")
        self.check("spec F1", "nmap TCP scan of all 65535 ports from the ISP finds nothing open",
                   rc == 0 and not open_tcp and summary != "", summary or " | ".join(out[-3:]))
        rc, out = w.ns("isp", f"nmap -n -Pn -sU --top-ports 100 --min-rate 500 --max-retries 1 {self.wan}", 300)
        open_udp = [l for l in out if re.match(r"^\d+/udp\s+open\s", l)]
        summary = next((l for l in out if "Not shown" in l or "All 100" in l), "")
        self.check("spec F1", "nmap UDP scan (top 100 ports) from the ISP finds nothing open",
                   rc == 0 and not open_udp, summary or " | ".join(out[-3:]))
        # An attacker on the ISP's link routes private ranges to the router.
        w.ns("isp", f"ip route replace 10.20.0.0/24 via {self.wan}")
        w.ns("isp", f"ip route replace 192.168.1.0/24 via {self.wan}")
        phone, pc = self.phone_ip["phone2"], self.pc_ip
        w.capture("phone2", "wan-in-phone", "lan0", "not arp and not udp port 67 and not udp port 68")
        w.capture("pc", "wan-in-pc", "lan0", "not arp and not udp port 67 and not udp port 68")
        results = []
        for dst in (phone, pc):
            results.append(w.out(f"ip netns exec isp python3 {W}/peer.py tcp {dst} 80 2"))
            w.ns("isp", f"python3 {W}/peer.py send-udp {dst} 5060")
            w.ns("isp", f"busybox ping -c 1 -W 1 {dst}")
        time.sleep(1)
        w.stop_capture("wan-in-phone")
        w.stop_capture("wan-in-pc")
        seen = self.world.packets("wan-in-phone", "not src host 10.20.0.1 and not dst host 10.20.0.1") + \
            self.world.packets("wan-in-pc", "not src host 192.168.1.1 and not dst host 192.168.1.1")
        from_wan = [l for l in seen if "198.51.100.1 " in l or "198.51.100.1." in l]
        w.ns("isp", "ip route del 10.20.0.0/24")
        w.ns("isp", "ip route del 192.168.1.0/24")
        self.check("spec F1", "nothing from the WAN reaches a phone or the PC (TCP 80, UDP 5060, ping)",
                   all(r.startswith("closed") for r in results) and not from_wan,
                   f"connects: {results}; packets from the ISP seen inside: {len(from_wan)}")

    def pc_and_phones(self):
        w = self.world
        l, _ = dhcp(w, "pc")
        self.pc_ip = l.get("ip", "")
        self.check("spec S4", "the PC gets a lease on the untagged LAN", self.pc_ip.startswith("192.168.1."), self.pc_ip)
        phone = self.phone_ip["phone2"]
        rc, out = w.ns("pc", f"busybox wget -q -O - -T 5 http://{phone}/")
        self.check("spec S4", "PC -> phone HTTP 80 (the phone's web UI)", rc == 0 and "phone web UI" in out, " ".join(out)[:80])
        rc, out = w.ns("pc", f"busybox ping -c 2 -W 2 {phone}")
        self.check("spec S4", "PC -> phone ping", rc == 0, out[-2] if len(out) > 1 else "")
        other = [w.out(f"ip netns exec pc python3 {W}/peer.py tcp {phone} {p} 2") for p in (22, 443, 8080)]
        self.check("spec S4", "PC -> phone other TCP ports (22, 443, 8080) are refused",
                   all(o.startswith("closed") for o in other), "; ".join(other))
        w.bg("pc", "pc-web", "python3 -m http.server 80")
        time.sleep(1)
        back = w.out(f"ip netns exec phone2 python3 {W}/peer.py tcp {self.pc_ip} 80 2")
        ping = w.ns("phone2", f"busybox ping -c 1 -W 2 {self.pc_ip}")[0]
        self.check("spec S4", "phone -> PC: nothing new (TCP 80, ping)",
                   back.startswith("closed") and ping != 0, f"tcp {back}; ping exit {ping}")

    def wifi_calling(self):
        w = self.world
        l, _ = dhcp(w, "wifi")
        ip = l.get("ip", "")
        w.capture("provider", "epdg", "down0", f"host {EPDG}")
        for port in (500, 4500):
            w.ns("wifi", f"python3 {W}/peer.py send-udp {EPDG} {port} {port}")
        w.ns("wifi", f"python3 {W}/peer.py send-esp {EPDG}")
        w.ns("wifi", f"python3 {W}/peer.py send-ah {EPDG}")
        time.sleep(1)
        w.stop_capture("epdg")
        pk = w.packets("epdg")
        got = {
            "udp 500": any(f"{self.wan}.500 > {EPDG}.500" in p for p in pk),
            "udp 4500": any(f"> {EPDG}.4500" in p for p in pk),
            "esp": any("ESP" in p and f"{self.wan} > {EPDG}" in p for p in pk),
            "ah": any("AH(" in p and f"{self.wan} > {EPDG}" in p for p in pk),
        }
        self.check("spec W1", "the Wi-Fi-calling device reaches the ePDG on UDP 500, 4500, ESP and AH",
                   ip.startswith("10.30.0.") and all(got.values()), f"device {ip}; at the ePDG: {got}")

    def voice_class(self):
        _, q = self.router.sh("tc qdisc show")
        _, eg = self.router.sh("tc -s class show dev eth0")
        _, ig = self.router.sh("tc -s class show dev ifb-eth0")

        def pkts(lines, cls="1:10"):
            for i, l in enumerate(lines):
                if l.startswith(f"class htb {cls} "):
                    m = re.search(r"Sent \d+ bytes (\d+) pkt", lines[i + 1] if i + 1 < len(lines) else "")
                    return int(m.group(1)) if m else 0
            return 0

        leaves = sorted({l.split()[1] for l in q if l.startswith("qdisc ") and l.split()[1] in ("fq_codel", "cake")})
        self.check("spec B3", "the voice class carries the calls' packets on egress and ingress (fq_codel/cake leaves)",
                   pkts(eg) > 100 and pkts(ig) > 100 and leaves,
                   f"voice class: egress {pkts(eg)} pkts, ingress {pkts(ig)} pkts; leaves {leaves}")
        # The earlier checks' TCP connections (the port table, provisioning,
        # the PC software) acknowledged what the servers sent.
        self.check("spec B3", "TCP acknowledgements leave in their own upload class 1:15",
                   pkts(eg, "1:15") > 0, f"class 1:15: {pkts(eg, '1:15')} pkts")

    def wan_change(self):
        w = self.world
        old = self.wan
        # The ISP moves the router to another address: its DHCP server now
        # offers only 198.51.100.30-40 and refuses the old lease.
        w.sh(f"{W}/isp-dhcp 30 40")
        time.sleep(1)
        # udhcpc renews on SIGUSR1 (as at its lease's half-time): the ISP's NAK.
        self.router.sh("kill -USR1 $(routerctl status | sed -n 's/.*udhcpc: running, pid \\([0-9]*\\).*/\\1/p')")
        new = ""
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            _, out = self.router.sh("routerctl status")
            m = next((re.search(r"address (\S+)/", l) for l in out if l.strip().startswith("address")), None)
            new = m.group(1) if m else ""
            if new and new != old:
                break
            time.sleep(1)
        self.wan = new
        ip = self.phone_ip["phone2"]
        w.capture("provider", "rereg", "down0", "udp port 5060")
        code = sipp(w, "phone2", "phone-register.xml", ip, "-s 1002")
        w.stop_capture("rereg")
        froms = {p.split()[2].rsplit(".", 1)[0] for p in w.packets("rereg", f"dst host {SIP_SERVER} and dst port 5060") if " > " in p}
        self.check("spec F1", "the ISP changes the WAN address: the phone's next REGISTER succeeds",
                   new.startswith("198.51.100.3") and code == 0 and froms == {new},
                   f"{old} -> {new}; sipp exit {code}; REGISTER from {sorted(froms)}")

    def kill_routerd(self):
        w = self.world
        ip = self.phone_ip["phone2"]
        _, before = self.router.sh("pidof routerd")
        w.capture("phone2", "killcall", "lan0", f"udp and host {ECHO_UA}")
        w.bg("phone2", "killcall-sipp", f"sipp {SIP_SERVER} -sf {SIP}/phone-call.xml -i {ip} -s 1002 -mp 16500 -m 1 -nostdin -timeout 60s")
        time.sleep(3)  # the call is set up and its RTP flows
        mark = self.router_con.mark()
        t_kill = float(w.out("date +%s.%N"))  # the world's clock stamps its captures
        self.router.sh("kill -9 $(pidof routerd)")
        back = self.router_con.wait_for(r"applied and verified plan=|adopted", 60, mark)
        w.sh("sleep 8", 30)
        w.stop_capture("killcall")
        times = [float(l.split()[0]) for l in w.packets("killcall", f"src host {ECHO_UA} and dst port 16500")]
        around = [t for t in times if t_kill - 2 < t < t_kill + 3]
        gaps = [b - a for a, b in zip(around, around[1:])]
        worst = max(gaps) if gaps else None
        _, after = self.router.sh("pidof routerd")
        self.check("spec F1, F3", "routerd killed during a call: the RTP keeps flowing, routerd comes back",
                   back is not None and len(around) > 100 and worst is not None and worst < 0.5 and after and after != before,
                   f"echoed RTP around the kill: {len(around)} packets, longest gap {worst if worst is None else round(worst, 3)} s; "
                   f"routerd pid {' '.join(before)} -> {' '.join(after)}")

    def run(self):
        if not self.boot():
            return
        self.first_register()
        if not self.args.quick:
            self.start_idle()
        self.capacity()
        self.phone_dhcp_dns_ntp()
        self.router_ntp()
        self.register_byte_identical()
        self.port_table()
        self.call()
        self.incoming_call()
        self.conntrack_timeouts()
        self.pc_and_phones()
        self.pc_software()
        self.vendor_provisioning()
        self.wifi_calling()
        self.voice_class()
        self.from_the_wan()
        self.ipv6_from_the_wan()
        self.kill_routerd()
        if not self.args.quick:
            # Before the WAN changes: the idle flow's NAT mapping is on the
            # first address (and has lived through routerd's restart).
            self.finish_idle()
        self.wan_change()


def serve(lab, path):
    """Boots the lab, then runs commands for qemu-tests/lab/ctl.py: one JSON
    request per connection, {"vm": "world"|"router", "cmd": ..., "timeout": s},
    answered with {"rc": ..., "out": [lines]}."""
    import json
    import socket

    if not lab.boot():
        return 1
    print(f"lab: ready; commands: qemu-tests/lab/ctl.py {path} world|router COMMAND", flush=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    while True:
        conn, _ = srv.accept()
        with conn:
            req = json.loads(conn.makefile().readline())
            host = lab.world if req["vm"] == "world" else lab.router
            rc, out = host.sh(req["cmd"], req.get("timeout", 60))
            conn.sendall((json.dumps({"rc": rc, "out": out}) + "\n").encode())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--timeout", type=float, default=150.0)
    ap.add_argument("--quick", action="store_true", help="leave out the 290 s idle check")
    ap.add_argument("--serve", metavar="SOCKET",
                    help="no checks: boot, then run commands sent to SOCKET (qemu-tests/lab/ctl.py)")
    args = ap.parse_args()
    lab = Lab(args)
    if args.serve:
        return serve(lab, args.serve)
    try:
        lab.run()
    finally:
        with open(os.path.join(args.workdir, "timings.txt"), "w") as f:
            for key, t in lab.timings:
                line = f"{key:45s} {'%.1f s' % t if t is not None else '-'}"
                f.write(line + "\n")
                print("time " + line)
    print(f"lab: {lab.checks.passed} passed, {lab.checks.failed} failed")
    return 0 if lab.checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
