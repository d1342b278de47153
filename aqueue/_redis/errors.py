"""Redis error replies that mean a mistake in the setup, said in one clear line."""

from __future__ import annotations

import redis.exceptions

__all__ = ["explain"]


def explain(exc: BaseException) -> str | None:
    """What to do about a Redis error caused by the setup, or None for any other."""
    text = str(exc).rstrip(".")
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return (
            f"Redis refused a write ({text}): the URL points at a read-only replica. "
            "Point it at the primary (or use Sentinel to find it)"
        )
    if isinstance(exc, redis.exceptions.ResponseError) and "DB index is out of range" in text:
        return (
            "Redis has no database of the number in the URL (DB index is out of range): "
            "use a number below the server's `databases` setting (16 by default), "
            "e.g. redis://host:6379/0"
        )
    if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.NoPermissionError):
        return f"Redis refused the credentials in the URL ({text}): check the user and password"
    return None
