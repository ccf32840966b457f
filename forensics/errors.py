"""Errors a user can cause. Each carries one line saying what was wrong and what to do.

The CLI prints ``str(err)`` for these and exits non-zero, without a traceback.
Programming errors are not wrapped: they still raise with a traceback.
"""


class ForensicsError(Exception):
    """Base for user-facing errors (bad input, bad config, missing model)."""


class ConfigError(ForensicsError):
    """A settings value or file is wrong."""


class RedisUnavailable(ForensicsError):
    """A configured Redis cannot be reached."""


class WireError(ForensicsError):
    """A stream message is malformed, foreign, or of an unknown schema version."""


class BadVideo(ForensicsError):
    """A video file cannot be used: corrupt, truncated, empty, not video, or over a limit."""


class ModelError(ForensicsError):
    """A model artifact is missing, tampered with, or unusable."""


class AttackError(ForensicsError):
    """An adversarial attack cannot run meaningfully (for example zero gradients)."""
