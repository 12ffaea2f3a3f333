import subprocess, sys, time, signal, os
def active(u):
    return subprocess.run(["systemctl","is-active","-q",u]).returncode==0
def sleeping(u):
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if f"{u}" in open(f"/proc/{p}/cgroup").read() and open(f"/proc/{p}/cmdline","rb").read().startswith(b"sleep\0"):
                    return True
            except OSError: pass
    return False
def alien(u):
    out = subprocess.run(["journalctl","-u",u,"--no-pager","-o","cat"],capture_output=True,text=True).stdout
    return "not our child" in out
res=[]
mode=sys.argv[1]; n=int(sys.argv[2])
busy=subprocess.Popen(["sh","-c","while :; do :; done"])
for i in range(n):
    jid=f"r{mode}{i}x{os.getpid()}"; u=f"slotmgr-{jid}.service"
    p=subprocess.Popen([sys.executable,"-m","slotmgr","run","--job-id",jid,"--","sleep","600"],stdout=subprocess.PIPE,stderr=subprocess.PIPE,text=True)
    while not (active(u) and sleeping(u)): time.sleep(0.05)
    if mode=="launcher": p.send_signal(signal.SIGTERM)
    else: subprocess.run(["systemctl","stop",u])
    out,err=p.communicate(timeout=200)
    res.append((p.returncode, alien(u)))
    print(i, p.returncode, "alien" if alien(u) else "child", flush=True)
busy.kill()
from collections import Counter
print(mode, Counter(res))
