"""The ``awe>`` prompt: IPython with the awe namespace, the profile banner and ``.awehistory``.

An error raised by awe (a task that cannot run, a missing calibration, a
refused privilege, a bad parameter, a name of the course not implemented yet)
is shown as one line; ``%tb`` prints its traceback, and ``AWE_DEBUG=1`` shows
every traceback in full. Errors of the user's own code keep IPython's
tracebacks.
"""

from __future__ import annotations

import linecache
import logging
import os
import sys
import types
from pathlib import Path
from typing import Any

__all__ = ["start_prompt", "configure_logging", "install_error_display", "is_awe_error", "one_line", "debug_enabled"]

#: Built-in exceptions shown as one line when awe itself raised them (its validation).
_VALIDATION_ERRORS = (ValueError, TypeError, PermissionError, FileNotFoundError, NotImplementedError)
_AWE_DIR = Path(__file__).resolve().parent


def configure_logging(level: int = logging.INFO) -> None:
    """Show awe's log messages on the screen (the prompt and the CLI do this; the library never does)."""
    logger = logging.getLogger("awe")
    if not any(getattr(h, "_awe_screen", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._awe_screen = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level)


def debug_enabled() -> bool:
    """``AWE_DEBUG`` set to a true value: show full tracebacks at the prompt and in the CLI."""
    return os.environ.get("AWE_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


def is_awe_error(value: BaseException) -> bool:
    """Whether ``value`` is one of awe's own errors (one line is enough) rather than a bug or a user's error.

    True for the exceptions awe defines (``TaskError``, ``MissingCalibrationError``,
    ``PrivilegeError``, ``IngestError``, ``QueryError``, ``ParameterError``, ...)
    and for the built-in ``ValueError``, ``TypeError``, ``PermissionError``,
    ``FileNotFoundError`` and ``NotImplementedError`` when a ``raise`` statement
    in awe's code raised them (its validation of arguments). A ``TypeError``
    from a wrong call inside awe is a bug and keeps its traceback.
    """
    module = type(value).__module__ or ""
    if module == "awe" or module.startswith("awe."):
        return True
    if not isinstance(value, _VALIDATION_ERRORS):
        return False
    tb = value.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    try:
        Path(filename).resolve().relative_to(_AWE_DIR)
    except ValueError:
        return False
    return linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise")


def one_line(value: BaseException) -> str:
    """``ErrorName: message`` on one line, saying how to see the traceback."""
    message = " ".join(str(value).split()) or "(no message)"
    return f"{type(value).__name__}: {message}  [%tb shows the traceback]"


def _show_error(shell: Any, etype: type, value: BaseException, tb: types.TracebackType | None,
                tb_offset: int | None = None) -> None:
    """IPython custom exception handler: awe's errors as one line, everything else as usual."""
    # remember it as IPython does, so %tb and %debug find it
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = value
    if debug_enabled() or not is_awe_error(value):
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None
    print(one_line(value), file=sys.stderr, flush=True)
    return None


def install_error_display(shell: Any) -> None:
    """Show awe's errors as one line in this IPython shell (the prompt does it; a notebook may too)."""
    shell.set_custom_exc((Exception,), _show_error)


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


def _banner(context: Any) -> str:
    errors = ("full tracebacks: AWE_DEBUG=1" if debug_enabled()
              else "awe's errors are shown in one line; %tb prints the last traceback (AWE_DEBUG=1: always)")
    return f"{context.banner()}\n{errors}\n"


def start_prompt(argv: list[str] | None = None, namespace: dict[str, Any] | None = None) -> None:
    """Open the awe prompt in the working folder (history in ``.awehistory`` there)."""
    import IPython
    from traitlets.config import Config

    import awe

    awe.choose_backend()
    from awe import context

    configure_logging()
    context.connect() if not context.connected else None
    names = awe.namespace() if namespace is None else namespace
    workdir = Path(context.settings.workdir)
    cfg = Config()
    cfg.TerminalInteractiveShell.prompts_class = _prompts_class()
    cfg.TerminalInteractiveShell.banner1 = _banner(context)
    cfg.TerminalInteractiveShell.confirm_exit = False
    cfg.HistoryManager.hist_file = str(workdir / ".awehistory")
    cfg.InteractiveShellApp.exec_lines = [
        "import matplotlib; matplotlib.interactive(True)",
        "import awe.shell; awe.shell.install_error_display(get_ipython())",
    ]
    IPython.start_ipython(argv=argv or [], user_ns=names, config=cfg)
