"""User-facing errors: each names the file, line or key at fault and becomes one CLI line."""


class AlignflowError(Exception):
    """Bad input or configuration; the CLI prints the message alone and exits non-zero."""


class ConfigError(AlignflowError):
    """An invalid configuration key or value."""


class DataError(AlignflowError):
    """A corpus that is missing, malformed or inconsistent."""


class UnavailableError(AlignflowError):
    """A server or cluster the run needs cannot be reached, or can never hold the job as configured."""
