"""The one error media code raises: a machine-readable reason plus a message for people."""


class MediaError(Exception):
    """A clip cannot be used; `reason` is a code for tables, `message` says why for humans."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
