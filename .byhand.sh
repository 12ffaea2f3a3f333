#!/bin/sh
# Following README "Install on RHEL", "With Slurm", "With HTCondor" by hand, in a fresh 257-batch guest.
set -u
R=/work/main
step() { echo; echo "=== $*"; }
step "install the RPMs (Debian guest: payload extracted, as the RPM test does)"
SLOTMGR_GUEST=1 sh $R/tests/packaging/guest_install_check.sh $R/rpmbuild/RPMS/noarch/slotmgr-0.1.0-1.noarch.rpm && echo rpm ok
for p in batch htcondor; do (cd / && rpm2cpio $R/rpmbuild/RPMS/noarch/slotmgr-$p-0.1.0-1.noarch.rpm | cpio -idmu --quiet); done
ls -l /usr/libexec/slotmgr/ /etc/sudoers.d/slotmgr /etc/condor/config.d/ 2>&1
visudo -c
step "Slurm 2: build and install the plugin"
cd /root && gcc -shared -fPIC -o spank_slotmgr.so $R/packaging/slurm/spank_slotmgr.c; echo gcc=$?
PD=$(scontrol show config | sed -n 's/^PluginDir *= *//p' | cut -d: -f1); echo PluginDir=$PD
install -m 0755 spank_slotmgr.so $PD/
step "Slurm 3: plugstack"
scontrol show config | grep -i plugstack
echo "--- /etc/slurm/plugstack.conf:"; cat /etc/slurm/plugstack.conf 2>&1
mkdir -p /etc/slurm/plugstack.conf.d && install -m 0644 $R/packaging/slurm/plugstack.conf.d/slotmgr.conf /etc/slurm/plugstack.conf.d/
grep -q plugstack.conf.d /etc/slurm/plugstack.conf 2>/dev/null || { echo "(adding the include line, as the README says for 'elsewhere')"; echo 'include /etc/slurm/plugstack.conf.d/*.conf' >> /etc/slurm/plugstack.conf; }
step "Slurm 4: Epilog"
install -m 0755 $R/packaging/slurm/slotmgr-epilog /usr/libexec/slotmgr/slotmgr-epilog
echo 'Epilog=/usr/libexec/slotmgr/slotmgr-epilog' >> /etc/slurm/slurm.conf
scontrol reconfigure; echo reconfigure=$?
for i in $(seq 60); do scontrol show config | grep -q 'slotmgr-epilog' && break; sleep 2; done
scontrol show config | grep -i epilog
for i in $(seq 90); do sinfo -h -o '%T' | grep -qv idle || break; sleep 2; done; sinfo
step "a user's job"
id batchuser >/dev/null 2>&1 || useradd --create-home --shell /bin/sh batchuser
mkdir -p /srv/hand && chown batchuser /srv/hand && cd /srv/hand
cat > job.sh <<'JOB'
#!/bin/sh
#SBATCH --mem=256M
echo "batch: $(cat /proc/self/cgroup) pid1=$(cat /proc/1/comm)"
srun -n2 sh -c 'echo "task $SLURM_PROCID: $(cat /proc/self/cgroup) sees $(ls /proc | grep -c "^[0-9]") pids"'
python3 -c 'import time,resource
end=time.process_time()+3
while time.process_time()<end: pass
u=resource.getrusage(resource.RUSAGE_SELF); print("self_cpu", u.ru_utime+u.ru_stime)'
JOB
chmod 755 job.sh; chown batchuser job.sh
J=$(runuser -u batchuser -- sbatch --parsable job.sh); echo job=$J
for i in $(seq 90); do s=$(scontrol show job $J 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'); case $s in COMPLETED|FAILED|CANCELLED|TIMEOUT|OUT_OF_MEMORY|NODE_FAIL) break;; esac; sleep 2; done
scontrol show job $J | grep -E 'JobState|ExitCode'
cat slurm-$J.out
slotmgr history --batch-id $J
for i in $(seq 60); do c=$(sacct -j $J -X -n -P -o AdminComment); [ -n "$c" ] && break; sleep 2; done; echo "AdminComment: $c"
journalctl -t slotmgr-epilog --no-pager | tail -5
step "HTCondor 3"
condor_reconfig; sleep 5
condor_config_val USER_JOB_WRAPPER CHIRP_DELAYED_UPDATE_PREFIX
for i in $(seq 60); do condor_status -af Name State 2>/dev/null | grep -q Unclaimed && break; sleep 3; done; condor_status -af Name State
mkdir -p /srv/hand/c && chown batchuser /srv/hand/c && cd /srv/hand/c
cat > burn.py <<'JOB'
#!/usr/bin/python3
import os, resource, time
print("cgroup", open("/proc/self/cgroup").read().strip(), "pid1", open("/proc/1/comm").read().strip())
print(sorted(k for k in os.environ if k.startswith("_CONDOR")))
end = time.process_time() + 3
while time.process_time() < end: pass
u = resource.getrusage(resource.RUSAGE_SELF); print("self_cpu", u.ru_utime + u.ru_stime)
JOB
chmod 755 burn.py
printf 'executable = burn.py\noutput = out\nerror = err\nlog = log\nrequest_memory = 100\nqueue\n' > job.sub
chown -R batchuser .
C=$(runuser -u batchuser -- condor_submit -terse job.sub | cut -d. -f1); echo cluster=$C
for i in $(seq 120); do condor_history $C -af JobStatus 2>/dev/null | grep -q 4 && break; sleep 3; done
condor_q; condor_history $C -af JobStatus ExitCode SlotmgrCpuUsec SlotmgrMemoryPeakBytes SlotmgrResult SlotmgrBatchId SlotmgrFailed
cat out err
slotmgr history --batch-id $C.0
