#!/bin/sh
# The MPD case side by side, on a node whose PID 1 is systemd (scripts/demo
# runs this in a test-bed guest): examples/mpd-job.sh first as a plain
# process, then as a slotmgr job.  Exits non-zero when the slotmgr run leaves
# anything behind or no record of it can be shown.  Runs as root, with the
# slotmgr of this repository (python3 -m slotmgr) unless $SLOTMGR names
# another slotmgr command.
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
job="$here/mpd-job.sh"  # absolute: a job does not start in this directory
job_id="demo-$(date +%s)"
slotmgr() { ${SLOTMGR:-python3 -m slotmgr} "$@"; }
failed=0
fail() { echo "demo: FAILED: $*"; failed=1; }

daemons() { pgrep -f 'mpd_daemon.py demo' | tr '\n' ' '; }

leftovers() {  # what of the job is on the node now; $1: what it should be
    sock=$(ls -l /tmp/mpd-demo.sock 2>/dev/null || true)
    pids=$(daemons)
    echo "world-writable socket in the node's /tmp: ${sock:-none}"
    echo "processes of the job still running:       ${pids:-none}"
    if [ "$1" = gone ] && { [ -n "$sock" ] || [ -n "$pids" ]; }; then
        fail "the job left its daemon or socket on the node"
    fi
    if [ "$1" = left ] && { [ -z "$sock" ] || [ -z "$pids" ]; }; then
        fail "without slotmgr the job should have left its daemon and socket (nothing to compare)"
    fi
}

echo "===== 1. without slotmgr: sh $job"
sh "$job" || fail "the job exited with status $?"
echo "===== after it, on the node"
leftovers left
echo "===== cleaning up by hand, as a node admin would have to"
for pid in $(daemons); do
    ps -o pid,user,args -p "$pid" | tail -n 1
    kill "$pid"
done
tries=0
while [ -n "$(daemons)" ] && [ $tries -lt 50 ]; do sleep 0.1; tries=$((tries + 1)); done
rm -f /tmp/mpd-demo.sock /tmp/mpd-demo.ready
left=$(daemons; ls /tmp/mpd-demo.* 2>/dev/null)
echo "left now: ${left:-nothing}"

echo
echo "===== 2. under slotmgr: slotmgr run --memory-max 512M --job-id $job_id -- sh $job"
slotmgr run --memory-max 512M --job-id "$job_id" -- sh "$job"
status=$?
[ $status -eq 0 ] || fail "slotmgr run exited with status $status"
echo "===== after it, on the node"
leftovers gone
state=$(systemctl is-active "slotmgr-$job_id.service" 2>&1)
echo "unit slotmgr-$job_id.service: $state"
case $state in active|activating|deactivating|reloading) fail "the job's unit is still $state";; esac
echo "===== its record: slotmgr status $job_id"
slotmgr status "$job_id" || fail "slotmgr status found no record of job $job_id"
echo "===== slotmgr history"
slotmgr history --limit 5 || fail "slotmgr history failed"

echo
if [ $failed -eq 0 ]; then
    echo "demo: ok: under slotmgr nothing of the job was left on the node, and its record is kept"
fi
exit $failed
