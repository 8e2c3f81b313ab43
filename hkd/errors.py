"""The error every ``hkd`` step raises for unusable input; the message names the file or key."""


class DataError(ValueError):
    """A source file or value that cannot be used; the message names the file or key."""
