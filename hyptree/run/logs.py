"""Make ``hyptree``'s log messages reach the user, whatever Dassl did to logging.

Importing ``dassl.engine`` runs ``logging.disable(logging.WARNING)`` for the whole process
(Dassl's wilds dataset module), which mutes every ``log.warning`` / ``log.info`` of
``hyptree`` - a taxonomy that loses classes would train on the rest without a word.
:func:`route_logging` undoes that and sends the ``hyptree`` logger to the console *as it
is at each message*: after Dassl's ``setup_logger`` that is its tee into ``log.txt``, so the
messages land in the run's log file too.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["route_logging", "ConsoleHandler"]


class ConsoleHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stdout`` is when a record is emitted (Dassl
    replaces ``sys.stdout`` by its ``Logger``, which copies into ``log.txt``)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the live sys.stdout wins
        pass


def route_logging(level: int = logging.INFO) -> logging.Logger:
    """Re-enable logging (``logging.disable(NOTSET)``) and give the ``hyptree`` logger one
    :class:`ConsoleHandler` at ``level`` (idempotent: a second call adds none). Returns it."""
    logging.disable(logging.NOTSET)
    logger = logging.getLogger("hyptree")
    logger.setLevel(min(logger.level or level, level))
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        handler = ConsoleHandler()
        handler.setFormatter(logging.Formatter("[hyptree %(levelname)s] %(message)s"))
        logger.addHandler(handler)
    return logger
