"""One logging setup for every verb: `time name LEVEL: message` on stderr."""
from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def setup_logging(level: str | int = "INFO") -> None:
    """Configure the root logger once per process (later calls only change the level)."""
    level = level.upper() if isinstance(level, str) else level
    logging.basicConfig(level=level, format=FORMAT)
    logging.getLogger().setLevel(level)
