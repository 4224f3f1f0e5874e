#!/usr/bin/env python3
"""Boots the router's disk image in QEMU (TCG) and checks it from its serial console.

Started by run.sh, which prepares the network namespace with the WAN's
DHCP server and the tap devices. This script starts QEMU (inside that
namespace), reads the serial console line by line with the time each line
arrived, waits for the milestones of a boot, runs commands on the console
(a root shell) and checks what they print.

Checks, in order:
  boot 1 (power-on, data partition empty)
    - GRUB chooses root slot A;
    - the kernel starts the initramfs, which mounts PARTLABEL=rootfs-a;
    - rcS: first boot, the factory config is copied to the data partition;
    - routerd applies and verifies its plan;
    - the WAN gets its address from the ISP's DHCP server;
    - slot A is marked good in GRUB's environment;
    - every loaded kernel module is in the image's kernel-modules.txt;
    - nothing listens on the WAN (no TCP listener, no UDP socket on the WAN
      address or the wildcard address except DHCP's 67 and 68);
    - `routerctl apply` takes a changed config (LAN 192.168.7.1/24);
    - ORDER is set to "B A" and the router reboots: routerd stops, the data
      partition is unmounted, the machine resets (QEMU runs with -no-reboot
      and is started again on the same disk: a power cycle);
  boot 2 (same disk)
    - GRUB chooses slot B;
    - not a first boot: the changed config from the data partition is applied;
    - slot B is marked good.

The image is the read-only backing file of a qcow2 overlay in the work
directory: it is never written.

Prints one line per check and a closing "N passed, N failed" line; exits 1
if any check failed. Timings (seconds since power-on) go to timings.txt.
"""

import argparse
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from vm import Checks, Console  # noqa: E402

CHANGED_LAN = "192.168.7.1/24"


class Machine:
    """The router VM: QEMU with the disk, the two ports and the serial console."""

    def __init__(self, args, disk):
        self.args = args
        self.disk = disk
        self.proc = None
        self.boots = 0

    def power_on(self):
        """Starts QEMU; the console of this boot (time 0 is power-on)."""
        self.boots += 1
        a = self.args
        sock = os.path.join(a.workdir, f"serial{self.boots}.sock")
        qemu = [
            "ip", "netns", "exec", a.netns,
            "qemu-system-x86_64", "-accel", "tcg", "-m", a.memory, "-smp", "1",
            "-nodefaults", "-display", "none",
            # A reset (the router's reboot) ends QEMU: the test powers it on
            # again. TCG is slow after a warm reset (see docs/image.md).
            "-no-reboot",
            "-drive", f"file={self.disk},format=qcow2,if=virtio",
            # eth0 (WAN) and eth1 (LAN): PCI slots 3 and 4, probed in that order.
            "-netdev", "tap,id=wan,ifname=wan0,script=no,downscript=no",
            "-device", "virtio-net-pci,netdev=wan,mac=52:54:00:00:01:01,addr=0x3",
            "-netdev", "tap,id=lan,ifname=lan0,script=no,downscript=no",
            "-device", "virtio-net-pci,netdev=lan,mac=52:54:00:00:02:01,addr=0x4",
            "-chardev", f"socket,id=ser0,path={sock},server=on,wait=on",
            "-serial", "chardev:ser0",
        ]
        qlog = open(os.path.join(a.workdir, f"qemu{self.boots}.log"), "w")
        self.proc = subprocess.Popen(qemu, stdout=qlog, stderr=subprocess.STDOUT)
        return Console(sock, os.path.join(a.workdir, f"serial{self.boots}.log"))

    def wait_off(self, timeout):
        """True when QEMU exited by itself (the router reset) within `timeout`."""
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wan_listeners(ss_lines, wan_addr):
    """Sockets that listen on the WAN: TCP listeners on the WAN address or
    any address, UDP sockets there other than DHCP's (67 server on the LAN
    side, bound to its device; 68 the WAN client) and dnsmasq's upstream
    query sockets (ephemeral ports)."""
    bad = []
    for line in ss_lines:
        f = line.split()
        if len(f) < 5:
            continue
        proto, local = f[0], f[4]
        addr, _, port = local.rpartition(":")
        addr = addr.strip("[]").split("%")[0]
        device = local.split("%")[1].split(":")[0] if "%" in local else ""
        wildcard = addr in ("0.0.0.0", "*", "::")
        if device and device != "eth0":
            continue  # bound to a LAN-side device
        if addr == wan_addr or wildcard:
            if proto == "udp" and port in ("67", "68"):
                continue
            # dnsmasq's upstream queries leave from random ephemeral ports
            # (spoofing protection); they take only the answers to its own
            # queries, and the firewall lets in only replies.
            if proto == "udp" and port.isdigit() and int(port) >= 32768 and '"dnsmasq"' in line:
                continue
            bad.append(line)
    return bad


def boot_milestones(con, checks, boot, slot, start, timeout, timings):
    """Waits for one boot's milestones; True when routerd applied its plan."""
    t_end = time.monotonic() + timeout
    left = lambda: max(0.1, t_end - time.monotonic())
    grub = con.wait_for(r"GRUB: booting root slot (\w)", left(), start)
    checks.check(
        f"{boot}: GRUB boots root slot {slot}",
        grub is not None and grub[1].group(1) == slot,
        f"{grub[1].group(0)}" if grub else "no GRUB line",
    )
    kernel = con.wait_for(r"initramfs: Linux version (\S+), root PARTLABEL=(\S+)", left(), start)
    checks.check(
        f"{boot}: the kernel boots and the initramfs looks for rootfs-{slot.lower()}",
        kernel is not None and kernel[1].group(2) == f"rootfs-{slot.lower()}",
        kernel[1].group(0) if kernel else "no initramfs line",
    )
    rcs = con.wait_for(r"rcS: root slot (\w+), data on (.*)", left(), start)
    checks.check(
        f"{boot}: rcS runs from slot {slot} with the data partition mounted",
        rcs is not None and rcs[1].group(1) == slot and "ext4" in rcs[1].group(2),
        rcs[1].group(0) if rcs else "no rcS line",
    )
    outcome = con.wait_for(r"applied and verified plan=(\w+)|the first apply failed.*error=(.*)", left(), start)
    applied = outcome if outcome and outcome[1].group(1) else None
    if outcome and not applied:
        detail = f"routerd: {outcome[1].group(2)[:300]}"
    else:
        detail = f"at {applied[0]:.1f} s" if applied else f"not within {timeout} s"
    checks.check(f"{boot}: routerd applied and verified its plan", applied is not None, detail)
    for key, hit in (("grub", grub), ("kernel", kernel), ("rcS", rcs), ("routerd applied", applied)):
        timings.append((boot, key, hit[0] if hit else None))
    return applied is not None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--netns", required=True)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--memory", default="256")
    args = ap.parse_args()

    # The image is the read-only backing file of a throwaway overlay: it
    # is never written, and what the router writes survives a power cycle
    # within the test.
    disk = os.path.join(args.workdir, "disk.qcow2")
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", args.image, "-F", "raw", disk],
        check=True,
    )
    checks = Checks()
    timings = []
    machine = Machine(args, disk)
    try:
        run_checks(machine, checks, timings, args)
    finally:
        machine.stop()
    with open(os.path.join(args.workdir, "timings.txt"), "w") as f:
        for boot, key, t in timings:
            line = f"{boot:7s} {key:18s} {'%.1f s' % t if t is not None else '-'}"
            f.write(line + "\n")
            print("time " + line)
    print(f"boot: {checks.passed} passed, {checks.failed} failed")
    return 0 if checks.failed == 0 else 1


def run_checks(machine, checks, timings, args):
    c = checks.check
    con = machine.power_on()
    if not boot_milestones(con, checks, "boot 1", "A", 0, args.timeout, timings):
        return
    first = con.wait_for(r"rcS: first boot: the factory config", 1, 0)
    c("boot 1: empty data partition: the factory config is copied", first is not None)
    lease = con.wait_for(r"WAN DHCP event interface=eth0 event=Bound", 30, 0)
    c("boot 1: the WAN gets an address by DHCP", lease is not None)
    timings.append(("boot 1", "WAN lease", lease[0] if lease else None))
    good = con.wait_for(r"boot: slot A marked good \((.*)\)", 30, 0)
    c("boot 1: slot A is marked good", good is not None and "A_OK=1" in good[1].group(1)
      and "A_TRY=0" in good[1].group(1), good[1].group(0) if good else "no line")
    timings.append(("boot 1", "slot marked good", good[0] if good else None))

    # The console's shell.
    con.send("\n")
    rc, out = con.run("routerctl status")
    wan = next((re.search(r"address (\S+)/", l) for l in out if l.strip().startswith("address")), None)
    wan_addr = wan.group(1) if wan else ""
    c("boot 1: routerctl status: WAN address from the ISP, no error",
      rc == 0 and wan_addr.startswith("198.51.100.") and "Last error: none" in out,
      f"WAN {wan_addr or '?'}" if rc == 0 else f"exit {rc}: {out[-3:]}")

    rc, out = con.run("grep -h VmRSS /proc/$(pidof routerd)/status; busybox free -m | sed -n 2p")
    with open(os.path.join(args.workdir, "memory.txt"), "w") as f:
        f.write("\n".join(out) + "\n")
    print("info " + " | ".join(" ".join(l.split()) for l in out), flush=True)

    rc, listed = con.run("cat /usr/lib/routerd/kernel-modules.txt")
    rc2, lsmod = con.run("cut -d' ' -f1 /proc/modules")
    names = {m.replace("-", "_") for m in listed if m.strip()}
    loaded = {m.strip() for m in lsmod if m.strip()}
    extra = sorted(loaded - names)
    c("boot 1: every loaded kernel module is in kernel-modules.txt",
      rc == 0 and rc2 == 0 and loaded and not extra,
      f"{len(loaded)} loaded, {len(names)} listed" if not extra else f"not listed: {extra}")

    rc, ss = con.run("ss -Hlntuap")
    bad = wan_listeners(ss, wan_addr)
    c("boot 1: nothing listens on the WAN", rc == 0 and not bad and wan_addr != "",
      f"{len(ss)} sockets, none on the WAN" if not bad else f"on the WAN: {bad}")
    with open(os.path.join(args.workdir, "sockets.txt"), "w") as f:
        f.write("\n".join(ss) + "\n")

    # A user's change, then a slot switch: the config must survive both.
    rc, out = con.run(
        "sed 's|^address = \"192.168.1.1/24\"|address = \"" + CHANGED_LAN + "\"|; "
        "s|192.168.1.100|192.168.7.100|; s|192.168.1.250|192.168.7.250|' "
        "/etc/routerd/router.toml > /tmp/changed.toml && routerctl apply /tmp/changed.toml"
    )
    c("boot 1: routerctl apply takes a changed config", rc == 0, " ".join(out[-2:]))
    rc, out = con.run("grub-editenv /grub/grubenv set 'ORDER=B A' && sync && grub-editenv /grub/grubenv list")
    c("boot 1: ORDER set to B A", rc == 0 and "ORDER=B A" in out, " ".join(out))
    t_reboot = con.now()
    con.send("reboot\n")
    off = machine.wait_off(60)
    clean = con.wait_for(r"shutdown: routerd stopped, the data partition is clean", 1, 0)
    c("boot 1: reboot: routerd stops, the data partition is unmounted, the machine resets",
      off and clean is not None,
      f"{con.now() - t_reboot:.1f} s" if off and clean else "no clean shutdown line" if off else "still running after 60 s")
    if not off:
        return
    con = machine.power_on()
    start = 0
    if not boot_milestones(con, checks, "boot 2", "B", start, args.timeout, timings):
        return
    again = con.wait_for(r"rcS: first boot", 0.1, start)
    c("boot 2: not a first boot (the data partition kept the config)", again is None)
    good = con.wait_for(r"boot: slot B marked good \((.*)\)", 30, start)
    c("boot 2: slot B is marked good", good is not None and "B_OK=1" in good[1].group(1)
      and "B_TRY=0" in good[1].group(1), good[1].group(0) if good else "no line")
    con.send("\n")
    rc, out = con.run("routerctl status")
    c("boot 2: the changed config is applied after the reboot and the slot switch",
      rc == 0 and any(f"eth1 {CHANGED_LAN}" in l for l in out), " | ".join(l.strip() for l in out if "eth1 " in l))


if __name__ == "__main__":
    sys.exit(main())
