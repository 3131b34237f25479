"""A real Dask scheduler and workers on 127.0.0.1, as separate processes (``dask scheduler``, ``dask worker``,
``awe dpu worker``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

DASK = str(Path(sys.executable).with_name("dask"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """``dask scheduler`` + ``workers`` x ``dask worker`` (one thread each); :meth:`stop` ends them."""

    def __init__(self, workers: int = 2, log_dir: Path | None = None) -> None:
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.log_dir = log_dir
        self._files: list = []
        self.scheduler = self._start([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--no-dashboard"], env, "scheduler")
        self._wait_port()
        # the first worker is a plain `dask worker`, the others `awe dpu worker` (the same, with awe)
        commands = [[DASK, "worker"]] + [[sys.executable, "-m", "awe.cli", "dpu", "worker"]] * (workers - 1)
        self.workers = [self._start(cmd + [self.address, "--nthreads", "1", "--no-dashboard", "--name", f"w{i}"],
                                    env, f"worker{i}") for i, cmd in enumerate(commands[:workers])]

    def _start(self, cmd: list[str], env: dict, name: str) -> subprocess.Popen:
        out = open(self.log_dir / f"{name}.log", "wb") if self.log_dir else subprocess.DEVNULL
        if out is not subprocess.DEVNULL:
            self._files.append(out)
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def _wait_port(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"dask scheduler did not listen on {self.address}")

    def wait_workers(self, client, n: int, timeout: float = 120) -> None:
        client.wait_for_workers(n, timeout=timeout)

    def kill_scheduler(self) -> None:
        self.scheduler.kill()
        self.scheduler.wait()

    def stop(self) -> None:
        for p in self.workers + [self.scheduler]:
            if p.poll() is None:
                p.terminate()
        for p in self.workers + [self.scheduler]:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self._files:
            f.close()
