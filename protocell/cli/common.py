"""One error style for every entry point: a user error is one line on stderr and exit status 2."""

from __future__ import annotations

import logging
import os
import sys

from protocell.errors import ProtocellError

log = logging.getLogger("protocell")


def run_cli(name: str, fn, cfg):
    """``fn(cfg)``; a ``ProtocellError`` (bad config, input, store or run folder) becomes
    ``<name>: <message>`` and exit status 2, with the traceback only under ``debug=true`` or
    ``PROTOCELL_DEBUG=1``. Any other exception is a bug and keeps its traceback."""
    try:
        return fn(cfg)
    except ProtocellError as err:
        if cfg.get("debug") or os.environ.get("PROTOCELL_DEBUG") == "1":
            raise
        log.error("%s refused: %s", name, err)
        print(f"{name}: {err}", file=sys.stderr)
        raise SystemExit(2) from None
