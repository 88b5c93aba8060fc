"""A real single-node Slurm cluster on 127.0.0.1 in a temporary directory, for tests/test_slurm.py.

Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them): ``munged`` with its own key and socket,
``slurmctld`` and ``slurmd`` with their own ``slurm.conf``, state, spool, logs and free ports, all in the
foreground as children of the test (no systemd). Process tracking is ``proctrack/linuxproc`` and there is
no task or cgroup plugin, so it runs in a container without a writable cgroup tree. :func:`slurm_cluster`
yields the environment (``SLURM_CONF``) that points ``sbatch``/``squeue``/``scancel`` at it and stops every
daemon by PID when the block ends, also when it raises: jobs first (``scancel``), then slurmd, slurmctld and
munged.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import HANG_S, free_port, stop_server

NODE = "localhost"


def _conf(base: Path, ctld_port: int, slurmd_port: int, cpus: int) -> str:
    user = getpass.getuser()
    return f"""ClusterName=bigfive-test
SlurmctldHost={NODE}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={base}/munge.socket
SlurmUser={user}
SlurmdUser={user}
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MpiDefault=none
SwitchType=switch/none
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_for(what: str, ready, procs: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + min(HANG_S, 120)
    while time.monotonic() < deadline:
        if ready():
            return
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            break
        time.sleep(0.3)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    raise AssertionError(f"{what} did not come up:\n{tails}")


def _node_idle(env: dict[str, str]) -> bool:
    out = subprocess.run(["sinfo", "--noheader", "--format=%T"], env=env, capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip().rstrip("*") == "idle"


@contextlib.contextmanager
def slurm_cluster(cpus: int = 2) -> Iterator[dict[str, str]]:
    """Yield ``os.environ`` plus ``SLURM_CONF`` for a fresh one-node cluster of ``cpus`` CPUs."""
    for tool in ("munged", "slurmctld", "slurmd", "sbatch"):
        assert shutil.which(tool), f"{tool} not found: apt-get install slurm-wlm munge (.ci/run does)"
    # its own directory under /tmp: a unix socket path must stay under 108 bytes
    base = Path(tempfile.mkdtemp(prefix="bigfive-slurm-"))
    procs: list[subprocess.Popen] = []
    env = {**os.environ, "SLURM_CONF": str(base / "slurm.conf")}
    try:
        (base / "state").mkdir()
        (base / "spool").mkdir()
        key = base / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (base / "slurm.conf").write_text(_conf(base, free_port(), free_port(), cpus))
        procs.append(_start(["munged", "--foreground", "--force", f"--key-file={key}",
                             f"--socket={base}/munge.socket", f"--pid-file={base}/munged.pid",
                             f"--seed-file={base}/munge.seed", f"--log-file={base}/munged.log"],
                            base / "munged.out", env))
        _wait_for("munged", lambda: (base / "munge.socket").exists(), procs, [base / "munged.log"])
        procs.append(_start(["slurmctld", "-D", "-i", "-f", str(base / "slurm.conf")], base / "slurmctld.out", env))
        procs.append(_start(["slurmd", "-D", "-N", NODE, "-f", str(base / "slurm.conf")], base / "slurmd.out", env))
        _wait_for("the Slurm node", lambda: _node_idle(env), procs,
                  [base / n for n in ("slurmctld.out", "slurmctld.log", "slurmd.out", "slurmd.log")])
        yield env
    finally:
        _shutdown(procs, env)
        shutil.rmtree(base, ignore_errors=True)


def _shutdown(procs: list[subprocess.Popen], env: dict[str, str]) -> None:
    """Cancel every job and wait for it to go (slurmd reaps its job steps), then stop the daemons in reverse."""
    if len(procs) == 3 and procs[1].poll() is None:
        subprocess.run(["scancel", "--user", getpass.getuser(), "--full"], env=env, capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(["squeue", "--noheader"], env=env, capture_output=True, text=True)
            if out.returncode != 0 or not out.stdout.strip():
                break
            time.sleep(0.5)
        _reap_steps(Path(env["SLURM_CONF"]).parent)
    for proc in reversed(procs):
        stop_server(proc)
    for proc in procs:
        assert proc.returncode is not None, f"{proc.args[0]} (pid {proc.pid}) still running"


def _jobs_processes(base: Path) -> list:
    """This cluster's job-step daemons and job processes that are still alive (zombies have exited).

    slurmstepd is reparented to init and clears its environment: what marks it as this cluster's is the
    slurmd log it holds open. A job's processes carry the job's environment: SLURM_JOB_ID and our SLURM_CONF.
    """
    import psutil

    found = []
    for p in psutil.process_iter(["name", "status"]):
        with contextlib.suppress(psutil.Error):
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if p.info["name"] == "slurmstepd":
                if any(f.path.startswith(f"{base}/") for f in p.open_files()):
                    found.append(p)
                continue
            env = p.environ()
            if env.get("SLURM_CONF") == str(base / "slurm.conf") and "SLURM_JOB_ID" in env:
                found.append(p)
    return found


def _reap_steps(base: Path, timeout: float = 30) -> None:
    """Wait for this cluster's job steps and job processes to exit; kill any that linger, by PID."""
    import psutil

    deadline = time.monotonic() + timeout
    while (left := _jobs_processes(base)) and time.monotonic() < deadline:
        time.sleep(0.3)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()


def cancel(env: dict[str, str], job: str, sig: signal.Signals | None = None) -> None:
    """``scancel`` one job or array task (``<job>_<task>``), optionally with a signal instead of the kill."""
    cmd = ["scancel", job] if sig is None else ["scancel", f"--signal={sig.name.removeprefix('SIG')}", "--full", job]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=60)
