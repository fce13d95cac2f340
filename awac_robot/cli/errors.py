"""The one exception type CLI handlers raise for a problem the user can fix (printed as one line, exit 2)."""


class UserError(Exception):
    """A problem the user can fix: a wrong path, a bad flag combination, a failed stage of the demo."""
