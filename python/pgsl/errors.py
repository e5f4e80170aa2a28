"""The errors a user can fix, each naming the option, file, folder or peer at fault. ``pgsl``'s
command prints them as one line (exit code 2, or 1 for a peer); any other exception is a bug and
shows its traceback."""

from __future__ import annotations

__all__ = ["PgslError", "ConfigError", "DataError", "RunError", "PeerError"]


class PgslError(Exception):
    """Base class: a problem with the user's input, not with pgsl."""


class ConfigError(PgslError, ValueError):
    """An option with a value it cannot take."""


class DataError(PgslError, ValueError):
    """A data spec, file or line that cannot be used."""


class RunError(PgslError, RuntimeError):
    """A run folder, checkpoint or evaluation request that cannot be used."""


class PeerError(PgslError, RuntimeError):
    """A peer died, hung or broke the protocol."""
