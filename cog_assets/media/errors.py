"""The one error type media code raises, so callers can record *why* a clip was dropped."""

from __future__ import annotations

from cog_assets.core.reasons import RejectReason

__all__ = ["MediaError"]


class MediaError(Exception):
    """A clip cannot be used; `reason` is one of RejectReason, `message` says why for humans."""

    def __init__(self, reason: RejectReason | str, message: str):
        self.reason = RejectReason(reason)  # an unknown reason is a bug: ValueError here
        self.message = message
        super().__init__(f"{self.reason}: {message}")

    def __reduce__(self):  # keep picklable across process pools
        return (type(self), (self.reason.value, self.message))
