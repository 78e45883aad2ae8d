"""The data package's one user-facing error type."""


class DataError(ValueError):
    """A dataset that cannot be loaded as configured: the message names the path or value and what to do."""
