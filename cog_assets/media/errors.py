"""The one error type media code raises, so callers can record *why* a clip was dropped."""

from __future__ import annotations

__all__ = ["MediaError", "REASONS"]

# Reason codes of the media modules (a table of rejected clips groups on them); other
# stages may add their own, so MediaError does not restrict `reason` to this set.
REASONS = frozenset(
    {"empty_file", "unreadable", "no_video_stream", "too_short", "decode_error", "too_small",
     "truncated"}
)


class MediaError(Exception):
    """A clip cannot be used; `reason` is a machine-readable code, `message` says why for humans."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self):  # keep picklable across process pools
        return (type(self), (self.reason, self.message))
