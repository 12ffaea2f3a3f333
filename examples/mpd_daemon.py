"""MPICH's MPD launcher in miniature: the case slotmgr exists for.

It double-forks into the background (so its launcher loses track of it),
listens on a world-writable unix socket in /tmp (so any user on the node
could start processes through it), and lives on after the job's main process
exits. Usage: python3 mpd_daemon.py NAME
"""

import os
import socket
import sys
import time

name = sys.argv[1]
if os.fork():
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
path = f"/tmp/mpd-{name}.sock"
sock = socket.socket(socket.AF_UNIX)
sock.bind(path)
os.chmod(path, 0o777)
sock.listen()
open(f"/tmp/mpd-{name}.ready", "w").close()
while True:
    time.sleep(1)
