"""The one wrapper every stage's `__main__` goes through: user errors become one line and exit code 2."""

import sys
from collections.abc import Callable

from sslflow.errors import SslflowError


def run(main: Callable[[], None]) -> None:
    try:
        main()
    except SslflowError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
