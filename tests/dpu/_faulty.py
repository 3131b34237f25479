"""Tasks for the DPU's fault tests (importable by worker processes: the unit names them by module)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from awe.tasks.base import Task
from awe.tasks.calibration import HotPixelsTask


class KillOnceHotPixelsTask(HotPixelsTask):
    """HotPixelsTask whose process dies (SIGKILL) on its first attempt: ``AWE_TEST_KILL_MARKER`` names the file
    that says the first attempt happened."""

    def make(self) -> Any:
        marker = Path(os.environ["AWE_TEST_KILL_MARKER"])
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().make()


class SleepTask(Task):
    """Makes nothing; sleeps ``AWE_TEST_SLEEP`` seconds (a job still running when its scheduler goes)."""

    unit = "per_chip"
    selection = {"chip": "chip name", "instrument": "instrument"}

    def make(self) -> Any:
        time.sleep(float(os.environ.get("AWE_TEST_SLEEP", "30")))
        return []
