"""The server's own threads, named for the operating system.

Python keeps a thread's name to itself: on Linux the kernel knows every thread of
the process as the program ("python"), so `top -H`, `ps -L`, `perf` and py-spy
could not tell the SQLite commit thread from the event loop. `set_native_name`
gives the calling thread a name the kernel shows.
"""

from __future__ import annotations

import ctypes
import sys

_PR_SET_NAME = 15
NATIVE_NAME_MAX = 15
"""Bytes of a thread's name that Linux keeps (16 with the terminating NUL)."""


def set_native_name(name: str) -> None:
    """Name the calling thread for the OS (cut to `NATIVE_NAME_MAX` bytes).

    On Linux only; elsewhere, and when the C library cannot be reached, nothing
    happens: a thread's name is for people reading a process list, and never worth
    failing a server for.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:NATIVE_NAME_MAX], 0, 0, 0)
    except (OSError, AttributeError):
        return
