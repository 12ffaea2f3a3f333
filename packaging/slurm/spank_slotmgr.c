/*
 * spank_slotmgr: every task of a Slurm job (the batch script, each srun
 * step's tasks) runs as a slotmgr unit, through slotmgr's sudo entry:
 *
 *     sudo -n /usr/libexec/slotmgr/batch-run --quiet \
 *         --pass-env SLURM_* --pass-env SLURMD_* -- TASK...
 *
 * slurmstepd forks each task, becomes the job's user and calls
 * slurm_spank_task_init() just before execve(); spank_prepend_task_argv()
 * (Slurm 23.11+) puts the entry in front of the task's argv there.  The entry
 * (slotmgr/cli/batch.py) runs the task as the user, with the limits of the
 * step's cgroup (--inherit-limits) and the task's SLURM_* and SLURMD_*
 * variables (sudoers env_keep keeps those, SLURMD_NODENAME among them), so an
 * srun inside it stays a step of the job; `slotmgr run` stays in the step as
 * the task's launcher, and the unit stops when Slurm kills it (scancel,
 * time limit, end of the job).  Root's own jobs run as they are: the entry
 * runs jobs for users only.
 *
 * plugstack.conf arguments (all optional):
 *     batch_run=PATH   the entry (default /usr/libexec/slotmgr/batch-run)
 *     sudo=PATH        sudo (default /usr/bin/sudo)
 *
 * Build: gcc -shared -fPIC -o spank_slotmgr.so spank_slotmgr.c
 * (needs Slurm's <slurm/spank.h>: Debian libslurm-dev, RHEL slurm-devel).
 */
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include <slurm/spank.h>

SPANK_PLUGIN(slotmgr, 1);

static const char *batch_run = "/usr/libexec/slotmgr/batch-run";
static const char *sudo_path = "/usr/bin/sudo";

static int parse_args(int ac, char **av)
{
	for (int i = 0; i < ac; i++) {
		if (strncmp(av[i], "batch_run=", 10) == 0 && av[i][10] == '/') {
			batch_run = av[i] + 10;
		} else if (strncmp(av[i], "sudo=", 5) == 0 && av[i][5] == '/') {
			sudo_path = av[i] + 5;
		} else {
			slurm_error("spank_slotmgr: unknown argument '%s' (want "
				    "batch_run=/ABSOLUTE/PATH or sudo=/ABSOLUTE/PATH)",
				    av[i]);
			return -1;
		}
	}
	return 0;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	if (!spank_remote(sp))
		return 0;
	return parse_args(ac, av);
}

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	const char *prefix[] = {sudo_path, "-n", batch_run, "--quiet",
				"--pass-env", "SLURM_*", "--pass-env", "SLURMD_*", "--"};
	uid_t uid;
	spank_err_t rc;

	(void)ac;
	(void)av;
	if (!spank_remote(sp))
		return 0;
	rc = spank_get_item(sp, S_JOB_UID, &uid);
	if (rc != ESPANK_SUCCESS) {
		slurm_error("spank_slotmgr: no job uid: %s", spank_strerror(rc));
		return -1;
	}
	if (uid == 0)
		return 0;
	rc = spank_prepend_task_argv(sp, sizeof(prefix) / sizeof(prefix[0]), prefix);
	if (rc != ESPANK_SUCCESS) {
		slurm_error("spank_slotmgr: spank_prepend_task_argv: %s",
			    spank_strerror(rc));
		return -1;
	}
	return 0;
}
