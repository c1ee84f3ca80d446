"""A real single-node SLURM for the tests: Debian's munge, slurmctld and slurmd, started as root in a temp dir.

``.ci/ensure-slurm`` (run by ``make test``) installs the packages. Everything the daemons write
(state, spool, logs, the munge key and socket) lives in the temp dir; the ports are free ones
picked here, so a SLURM already on the machine is not touched. ``SLURM_CONF`` points the client
commands (sbatch, squeue, scancel, sinfo) at this cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["COMMANDS", "PARTITION", "SlurmCluster", "why_not"]

COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
PARTITION = "wb"
_START_TIMEOUT_S = 60


def why_not() -> str | None:
    """Why a SLURM cannot be started here (not root, packages missing), or None."""
    if os.geteuid() != 0:
        return "starting SLURM's daemons needs root (CI's `make test` runs as root)"
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        return (f"no {', '.join(missing)}: install Debian's slurmctld slurmd slurm-client munge "
                "(`bash .ci/ensure-slurm`, which `make test` runs)")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _real_memory() -> int:
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30, check=True).stdout
    field = next(f for f in out.split() if f.startswith("RealMemory="))
    return int(field.split("=")[1])


class SlurmCluster:
    """munged, slurmctld and slurmd on this host, one partition of one node with 2 CPUs."""

    def __init__(self, root: Path) -> None:
        self.root, self.node = root, socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.munged_pid: int | None = None
        self.start_seconds = 0.0

    def _write_conf(self) -> None:
        r = self.root
        self.conf.write_text(f"""ClusterName=wbtest
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={r / 'munge.sock'}
CredType=cred/munge
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
KillWait=10
MinJobAge=60
NodeName={self.node} NodeAddr=127.0.0.1 CPUs=2 RealMemory={_real_memory()} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def start(self) -> None:
        """Start the daemons and wait until the node is idle; raises RuntimeError with the logs if it never is."""
        t0 = time.monotonic()
        r = self.root
        os.chmod(r, 0o700)  # munged refuses a key or socket in a folder others may write
        for d in ("state", "spool", "log"):
            (r / d).mkdir(exist_ok=True)
        (r / "munge.key").write_bytes(os.urandom(1024))
        os.chmod(r / "munge.key", 0o400)
        subprocess.run(["munged", "--force", f"--key-file={r / 'munge.key'}", f"--socket={r / 'munge.sock'}",
                        f"--pid-file={r / 'munged.pid'}", f"--seed-file={r / 'munged.seed'}",
                        f"--log-file={r / 'log' / 'munged.log'}"], timeout=30, capture_output=True, text=True)
        if not (r / "munged.pid").exists():
            raise RuntimeError(f"munged did not start: {self.logs()}")
        self.munged_pid = int((r / "munged.pid").read_text())
        self._write_conf()
        os.environ["SLURM_CONF"] = str(self.conf)
        for cmd in (["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
            log = open(r / "log" / f"{cmd[0]}.out", "w")
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            log.close()
        while time.monotonic() - t0 < _START_TIMEOUT_S:
            done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
            if done.stdout.strip() == "idle":
                self.start_seconds = time.monotonic() - t0
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.2)
        raise RuntimeError(f"SLURM did not come up: {self.logs()}")

    def logs(self) -> str:
        """The daemons' logs, last lines, for a failure message."""
        tails = []
        for p in sorted((self.root / "log").glob("*")):
            tails.append(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(tails)

    def stop(self) -> None:
        """Cancel every job, wait for them to go, then stop slurmd, slurmctld and munged."""
        subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = subprocess.run(["squeue", "-h"], capture_output=True, text=True, timeout=30)
            if done.returncode != 0 or not done.stdout.strip():
                break
            time.sleep(0.5)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.munged_pid:
            try:
                os.kill(self.munged_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        os.environ.pop("SLURM_CONF", None)
