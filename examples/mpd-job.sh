#!/bin/sh
# A job whose launcher double-forks a daemon with a world-writable socket in
# /tmp, then exits: run it with `slotmgr run -- sh examples/mpd-job.sh`
# (scripts/demo runs it side by side without and with slotmgr).
here=$(dirname "$0")
python3 "$here/mpd_daemon.py" demo
while [ ! -e /tmp/mpd-demo.ready ]; do sleep 0.1; done
echo "--- inside the job: /tmp"
ls -l /tmp
echo "--- inside the job: every process it can see (kernel threads left out)"
ps -eo pid,ppid,args | awk '$3 !~ /^\[/'
echo "--- the job's main process exits now, leaving the daemon behind"
