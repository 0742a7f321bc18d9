"""The one wrapper every stage's `__main__` goes through: user errors become one line and exit code 2, and the
stage stops when the process that started it (e.g. `dvc repro`) dies."""

import os
import sys
from collections.abc import Callable

from sslflow.errors import SslflowError
from sslflow.faults import watch_parent


def warn(message: str | None) -> None:
    """One `warning:` line on stderr for something the user should change (None: nothing to say). Rank 0 only
    under torchrun, so a warning is said once."""
    if message and os.environ.get("RANK", "0") == "0":
        print(f"warning: {message}", file=sys.stderr)


def run(main: Callable[[], None]) -> None:
    watch_parent()
    try:
        main()
    except SslflowError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
