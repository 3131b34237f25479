"""The ``awe>`` prompt: IPython with the awe namespace, the profile banner and ``.awehistory``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["start_prompt", "configure_logging"]


def configure_logging(level: int = logging.INFO) -> None:
    """Show awe's log messages on the screen (the prompt and the CLI do this; the library never does)."""
    logger = logging.getLogger("awe")
    if not any(getattr(h, "_awe_screen", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._awe_screen = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level)


def _prompts_class():
    from IPython.terminal.prompts import Prompts, Token

    class AwePrompts(Prompts):
        def in_prompt_tokens(self):
            return [(Token.Prompt, "awe> ")]

        def continuation_prompt_tokens(self, width=None, *, lineno=None, wrap_count=None):
            return [(Token.Prompt, "...  ")]

        def out_prompt_tokens(self):
            return []

    return AwePrompts


def start_prompt(argv: list[str] | None = None, namespace: dict[str, Any] | None = None) -> None:
    """Open the awe prompt in the working folder (history in ``.awehistory`` there)."""
    import IPython
    from traitlets.config import Config

    import awe
    from awe import context

    configure_logging()
    context.connect() if not context.connected else None
    names = awe.namespace() if namespace is None else namespace
    workdir = Path(context.settings.workdir)
    cfg = Config()
    cfg.TerminalInteractiveShell.prompts_class = _prompts_class()
    cfg.TerminalInteractiveShell.banner1 = context.banner()
    cfg.TerminalInteractiveShell.confirm_exit = False
    cfg.HistoryManager.hist_file = str(workdir / ".awehistory")
    cfg.InteractiveShellApp.exec_lines = ["import matplotlib; matplotlib.interactive(True)"]
    IPython.start_ipython(argv=argv or [], user_ns=names, config=cfg)
