"""glibc functions through ctypes, for the few process and memory settings Python lacks;
None where there is no glibc (macOS, musl without the symbol): callers then do without."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def libc_function(name: str, argtypes: list) -> Callable[..., int] | None:
    try:
        function = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = argtypes, ctypes.c_int
    return function
