#!/usr/bin/env python3
"""Runs one command on a VM of a running lab (lab_test.py --serve SOCKET).

  qemu-tests/lab/ctl.py SOCKET world|router COMMAND...

Prints the command's output; exits with its status.
"""

import json
import socket
import sys


def main():
    if len(sys.argv) < 4 or sys.argv[2] not in ("world", "router"):
        sys.exit(__doc__.strip())
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    req = {"vm": sys.argv[2], "cmd": " ".join(sys.argv[3:]), "timeout": 600}
    s.sendall((json.dumps(req) + "\n").encode())
    resp = json.loads(s.makefile().readline())
    print("\n".join(resp["out"]))
    return 1 if resp["rc"] is None else resp["rc"]


if __name__ == "__main__":
    sys.exit(main())
