"""procshare's logs: the ``procshare`` logger (the server logs under ``procshare.server``).

Nothing is printed unless the program configures logging: ``logging.basicConfig(level=...)``,
or ``procshare.log_to_stderr(level)``, which does what ``multiprocessing.log_to_stderr`` does
(and returns the same logger) and sends procshare's records to the same stderr handler.
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import Any

__all__ = ["log_to_stderr"]

logger = logging.getLogger("procshare")
# A library prints nothing of its own accord (not even through logging's last resort).
logger.addHandler(logging.NullHandler())


def log_to_stderr(level: Any = None) -> logging.Logger:
    """Log multiprocessing's and procshare's messages to stderr; return multiprocessing's
    logger, as the stdlib's ``log_to_stderr`` does."""
    mp_logger = multiprocessing.log_to_stderr(level)
    for handler in mp_logger.handlers:
        if handler not in logger.handlers:
            logger.addHandler(handler)
    if level is not None:
        logger.setLevel(level)
    logger.propagate = False  # (the records reach stderr once, through that handler)
    return mp_logger
