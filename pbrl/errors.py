"""The one exception type for user errors (bad input, unknown ids, missing files), and the one way to report one.

The CLI and the baseline scripts print these as one line, `pbrl: error: ...` on stderr, and exit with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

EXIT_USAGE = 2
"""The exit status of a refused input (argparse's too)."""


class PbrlError(ValueError):
    """A user-facing error: the message names the file or field and what was expected."""


class ResumeRefused(PbrlError):
    """A run folder cannot be continued: no checkpoint, or one of another config, data or format. The command line
    reports it as any PbrlError; a sweep's runner starts the run afresh instead."""


def error_line(message: object) -> None:
    """Print `pbrl: error: MESSAGE` on stderr (the CLI returns its status itself)."""
    print(f"pbrl: error: {message}", file=sys.stderr, flush=True)


def fail(message: object) -> NoReturn:
    """Refuse with one line and exit status 2 (a script's refusal outside a PbrlError)."""
    error_line(message)
    raise SystemExit(EXIT_USAGE)


def run_script(main: Callable[[], Any]) -> None:
    """A baseline script's entry point: `main()`, a PbrlError as one line and exit 2, main's int as the status."""
    try:
        status = main()
    except PbrlError as e:
        fail(e)
    raise SystemExit(status if isinstance(status, int) else 0)
