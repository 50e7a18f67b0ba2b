"""The tests' own look into a server's SQLite file, closed when done.

`with sqlite3.connect(path) as conn:` commits but leaves the connection open, and
Python 3.13 warns when it is collected unclosed (an error here: warnings are errors).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager


@contextmanager
def connect(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """A connection to `path` that commits when the block ends (rolls back on an
    exception), then closes."""
    with closing(sqlite3.connect(path)) as conn, conn:
        yield conn
