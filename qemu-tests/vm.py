"""What the QEMU tests share: a VM's serial console and the checks' tally."""

import os
import re
import socket
import threading
import time


class Console:
    """The serial console: every line with the time it arrived."""

    def __init__(self, path, log_path):
        self.lines = []  # (seconds since power-on, text)
        self.cond = threading.Condition()
        self.closed = False
        self.lock = threading.Lock()  # one command at a time
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.sock.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        # QEMU waits for this connection before it starts the machine.
        self.t0 = time.monotonic()
        self.log = open(log_path, "w", encoding="utf-8")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                self._add(raw)
        if buf:
            self._add(buf)
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _add(self, raw):
        text = raw.decode("utf-8", "replace")
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")
        t = time.monotonic() - self.t0
        with self.cond:
            self.lines.append((t, text))
            self.log.write(f"[{t:7.2f}] {text}\n")
            self.log.flush()
            self.cond.notify_all()

    def now(self):
        return time.monotonic() - self.t0

    def mark(self):
        """The position after every line seen so far."""
        with self.cond:
            return len(self.lines)

    def wait_for(self, pattern, timeout, start=0):
        """The first line from `start` on that matches: (time, match), or None."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = start
        with self.cond:
            while True:
                while i < len(self.lines):
                    t, text = self.lines[i]
                    m = rx.search(text)
                    if m:
                        return t, m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self.cond.wait(left)

    def send(self, text):
        self.sock.sendall(text.encode())

    def run(self, command, timeout=30):
        """Runs a shell command on the console; its exit status and output lines."""
        with self.lock:
            return self._run(command, timeout)

    def _run(self, command, timeout):
        tag = f"{os.getpid()}x{len(self.lines)}"
        start = self.mark()
        # The quotes keep the echoed command line from matching the markers.
        # One compound command, read whole before it runs: a program that
        # reads its terminal (nmap does) cannot eat the end marker, and a
        # command may end in "&".
        self.send(f"echo @@B''{tag}; {{ {command}\n}} < /dev/null; echo @@E''{tag} $?\n")
        if not self.wait_for(rf"^@@B{tag}$", timeout, start):
            return None, []
        end = self.wait_for(rf"^@@E{tag} (\d+)$", timeout, start)
        if not end:
            return None, []
        with self.cond:
            lines = [t for _, t in self.lines[start:]]
        b = lines.index(f"@@B{tag}")
        e = lines.index(f"@@E{tag} {end[1].group(1)}")
        # routerd's own log lines may come in between.
        out = [l for l in lines[b + 1 : e] if not re.match(r"^\d{4}-\d\d-\d\dT", l)]
        return int(end[1].group(1)), out


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}{' (' + detail + ')' if detail else ''}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}{': ' + detail if detail else ''}", flush=True)
        return ok
