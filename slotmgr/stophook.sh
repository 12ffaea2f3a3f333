# slotmgr's ExecStopPost= hook: how a job ended and what it used, into the
# history's spool, for slotmgr to store (slotmgr/history/hook.py reads it back).
#
#   sh stophook.sh SPOOL RUN_ID UNIT system|user [LAUNCHER_UNIT]
#
# LAUNCHER_UNIT: the unit watching the job's launcher (slotmgr/job/binding.py);
# if a stop job is pending and it is no longer active, the launcher went away.
#
# systemd runs it once, after the job's main process has ended and the rest
# of its processes were killed, while the unit's cgroup still exists; as
# root for the system manager ('+'). No interpreter, no database, no lock:
# the cgroup's counters are read first, with the shell's own builtins, so
# nothing but this shell has run in the cgroup on top of the job (and its
# own CPU time, `times`, is written down to be subtracted); then
# systemd's view of the unit (one systemctl, two if a job is pending on it);
# then the file is flushed to disk and appears whole, by rename. Nothing of
# the job's reaches it: its environment is systemd's, its arguments slotmgr's.
set -u
spool=$1 run=$2 unit=$3 manager=$4 launcher=${5-}
umask 077
scope=--system
[ "$manager" = user ] && scope=--user

cgroup=
while IFS= read -r line; do
    case $line in 0::*) cgroup=${line#0::} ;; esac
done < /proc/self/cgroup
# A delegated unit (a --user job) runs its hooks in a sub-cgroup of its own.
cgroup=${cgroup%/.control}
base=/sys/fs/cgroup$cgroup

out="service_result=${SERVICE_RESULT-}
exit_code=${EXIT_CODE-}
exit_status=${EXIT_STATUS-}
invocation_id=${INVOCATION_ID-}
"
for name in memory.peak pids.peak; do
    if [ -r "$base/$name" ] && read -r value < "$base/$name"; then
        out="${out}cgroup.$name=$value
"
    fi
done
if [ -r "$base/memory.events" ]; then
    while read -r key value; do
        [ "$key" = oom_kill ] && out="${out}cgroup.oom_kill=$value
"
    done < "$base/memory.events"
fi
if [ -r "$base/cpu.stat" ]; then
    while read -r key value; do
        case $key in usage_usec | user_usec | system_usec) out="${out}cgroup.$key=$value
" ;; esac
    done < "$base/cpu.stat"
fi
if [ -r "$base/io.stat" ]; then
    rbytes=0 wbytes=0
    while read -r _device fields; do
        for field in $fields; do
            case $field in
                rbytes=*) rbytes=$((rbytes + ${field#rbytes=})) ;;
                wbytes=*) wbytes=$((wbytes + ${field#wbytes=})) ;;
            esac
        done
    done < "$base/io.stat"
    out="${out}cgroup.io_read=$rbytes
cgroup.io_write=$wbytes
"
fi

tmp=$spool/$run.end.tmp
{
    printf '%s' "$out"
    # This shell's own CPU so far (a builtin, no fork): it includes what
    # systemd's forked child spent setting the hook up before the exec (on
    # 252 a mount namespace of its own, tenths of a second under emulation),
    # charged to the job's cgroup; slotmgr subtracts it from the job's CPU.
    printf 'hook.times='
    times
    # What only systemd knows: when the main process started and ended, how
    # (for a stop that caught it at its very start, $EXIT_CODE is empty),
    # its IP counters, and whether a stop job is pending (stopped by others).
    shown=$(systemctl "$scope" show --timestamp=us+utc \
        --property=ExecMainStartTimestamp,ExecMainExitTimestamp,ExecMainCode \
        --property=ExecMainStatus,Result,CPUUsageNSec,MemoryPeak,IOReadBytes \
        --property=IOWriteBytes,IPIngressBytes,IPEgressBytes,Job -- "$unit")
    set -f  # the lines are data: no pathname expansion
    IFS='
'
    for line in $shown; do
        printf 'systemd.%s\n' "$line"
    done
    unset IFS
    case "
$shown" in
        *"
Job="[1-9]*)
            systemctl "$scope" list-jobs --no-legend -- "$unit" | while read -r _id _unit type _state; do
                printf 'systemd.JobType=%s\n' "$type"
            done
            if [ -n "$launcher" ]; then
                printf 'launcher.state=%s\n' "$(systemctl "$scope" show --property=ActiveState --value -- "$launcher")"
            fi
            ;;
    esac
} > "$tmp" && sync -- "$tmp" && mv -f -- "$tmp" "$spool/$run.end"
