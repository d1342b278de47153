"""The wire format: one msgspec Struct per message, msgpack-encoded.

Nothing here ever unpickles: a message can only carry data msgspec knows
(builtins, Structs, dataclasses, datetimes, UUIDs, Decimals, ...) and can only
name a task by its registered name. Encoders and decoders are built once.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec

__all__ = [
    "SIGNATURE_MARK",
    "WIRE_VERSION",
    "Envelope",
    "ErrorInfo",
    "MessageError",
    "decode_envelope",
    "decode_error",
    "encode_envelope",
    "encode_error",
    "encode_value",
    "sign",
    "verify",
]

#: Bumped whenever a change to :class:`Envelope` is not backward compatible.
#: A worker rejects (dead-letters) any other version instead of guessing.
WIRE_VERSION = 1

SIGNATURE_MARK = b"\xa7aqsig1"  # never the first byte of a msgpack array
_SIGNATURE_LEN = 32


class Envelope(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    """One task message. New fields go last and always have a default."""

    v: int
    id: str
    task: str
    args: msgspec.Raw
    kwargs: msgspec.Raw
    queue: str
    enqueued_at: float
    retries: int = 0
    """Retries already spent (a retry re-enqueues with this + 1)."""
    timeout: float | None = None
    max_retries: int | None = None
    expires: float | None = None
    """Absolute deadline (epoch seconds) for *starting* the task."""
    shadow: str | None = None
    """Name to show in logs instead of the task name."""
    unique_key: str | None = None
    trace: dict[str, str] | None = None
    """Trace context (e.g. W3C ``traceparent``) carried from the producer."""


class ErrorInfo(msgspec.Struct, array_like=True, frozen=True):
    """A remote exception, as data."""

    type: str
    message: str
    traceback: str = ""


class MessageError(Exception):
    """A message that can't be run: the reason is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
_error_decoder = msgspec.msgpack.Decoder(ErrorInfo)
_any_decoder = msgspec.msgpack.Decoder()


def encode_value(value: Any) -> bytes:
    """Encode any msgspec-supported value as msgpack (raises TypeError otherwise)."""
    return _encoder.encode(value)


def encode_envelope(env: Envelope) -> bytes:
    return _encoder.encode(env)


def decode_envelope(data: bytes) -> Envelope:
    """Decode a message or raise :class:`MessageError` saying what is wrong with it."""
    try:
        env = _envelope_decoder.decode(data)
    except msgspec.DecodeError as exc:
        version = _peek_version(data)
        if version is not None and version != WIRE_VERSION:
            raise MessageError(
                "unsupported_version",
                f"message format v{version}; this worker reads v{WIRE_VERSION}",
            ) from exc
        raise MessageError("undecodable", f"not an aqueue message: {exc}") from exc
    if env.v != WIRE_VERSION:
        raise MessageError(
            "unsupported_version",
            f"message format v{env.v}; this worker reads v{WIRE_VERSION}",
        )
    return env


def _peek_version(data: bytes) -> int | None:
    try:
        raw = _any_decoder.decode(data)
    except msgspec.DecodeError:
        return None
    if isinstance(raw, list) and raw and isinstance(raw[0], int):
        return raw[0]
    return None


def encode_error(info: ErrorInfo) -> bytes:
    return _encoder.encode(info)


def decode_error(data: bytes) -> ErrorInfo:
    """Decode a stored error; unreadable data becomes a readable ErrorInfo."""
    if not data:
        return ErrorInfo("Unknown", "no error details were recorded")
    try:
        return _error_decoder.decode(data)
    except msgspec.DecodeError:
        return ErrorInfo("Unknown", data.decode("utf-8", "replace"))


def sign(payload: bytes, key: bytes) -> bytes:
    """Prefix ``payload`` with an HMAC-SHA256 of it under ``key``."""
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return SIGNATURE_MARK + mac + payload


def verify(data: bytes, key: bytes | None) -> bytes:
    """Return the payload of a (possibly signed) message.

    With a key, the message must carry a valid signature; without one, a
    signature is ignored.
    """
    signed = data.startswith(SIGNATURE_MARK)
    if signed:
        start = len(SIGNATURE_MARK)
        mac = data[start : start + _SIGNATURE_LEN]
        payload = data[start + _SIGNATURE_LEN :]
    else:
        mac, payload = b"", data
    if key is None:
        return payload
    if not signed:
        raise MessageError("bad_signature", "message is not signed, but this worker requires it")
    expected = hmac.new(key, payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise MessageError("bad_signature", "message signature does not match the signing key")
    return payload
