"""How `pocketfleet serve` logs: one level and one format for the standard library's loggers
and structlog's, and never the value of a variable.

structlog's default renderer prints an exception as rich's traceback with the local variables
of every frame, which puts an instance's variables, a password being handed to an engine, or a
request's body into the log. `configure_logging` renders structlog's events through the
standard library's logging instead (so `--log-level` applies to both), whose traceback is
Python's plain one: code, never values.
"""

from __future__ import annotations

import logging
from typing import TextIO

import structlog
from structlog.typing import ExcInfo

FORMAT = "%(levelname)s %(name)s: %(message)s"
QUIET = ("httpx",)  # a line per request they make: only their warnings


def _leave_to_logging(_out: TextIO, _exc_info: ExcInfo) -> None:
    """structlog's renderer writes no traceback: the standard library's logger does."""


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=FORMAT)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            # the message and its key=value pairs; `log.exception`'s traceback is added by the
            # standard library's `Logger.exception` (Python's own format: no locals)
            structlog.dev.ConsoleRenderer(colors=False, exception_formatter=_leave_to_logging),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
