"""The wire format and the messages that cross the Redis adapter.

* the envelope: one msgspec Struct per task message, msgpack-encoded and
  versioned, arguments deferred as ``Raw``;
* :class:`Codec`: packs and unpacks envelopes, signing them when the App has
  a ``signing_key``;
* what flows in and out of the broker: :class:`OutgoingMessage` (enqueue),
  :class:`Delivery` (a stream entry handed to a worker) and
  :class:`FinishItem` (an outcome, with its :class:`TaskStatus`);
* the completion-push frame and progress values live in :mod:`.frames`.

Nothing here ever unpickles: a message can only carry data msgspec knows
(builtins, Structs, dataclasses, datetimes, UUIDs, Decimals, ...) and can only
name a task by its registered name. Encoders and decoders are built once.
"""

from __future__ import annotations

import hashlib
import hmac
import traceback
from collections.abc import Callable
from typing import Any

import msgspec

from .status import TaskStatus

__all__ = [
    "MESSAGE_LIMIT",
    "SIGNATURE_MARK",
    "TRACEBACK_LIMIT",
    "WIRE_VERSION",
    "ChainLink",
    "ChordMember",
    "Codec",
    "Delivery",
    "Envelope",
    "ErrorInfo",
    "FinishItem",
    "MessageError",
    "OutgoingMessage",
    "decode_envelope",
    "decode_error",
    "describe_error",
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
_MARK_HEAD = SIGNATURE_MARK[:1]


class ChainLink(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    """The next step of a chain, carried by the step before it (workflows)."""

    queue: str
    payload: bytes
    """The next step's sealed message; its own ``then`` holds the steps after it."""
    immutable: bool = False
    """True: the step ignores its parent's value (``task.si``)."""
    delay: float = 0.0
    """Seconds the step waits once the step before it has finished (``delay=``)."""
    eta: float | None = None
    """Epoch seconds before which the step does not start (``eta=``)."""
    members: list[ChainLink] | None = None
    """A group inside a chain: the members' links (each counted by the chord whose
    callback is the step after the group); ``queue`` and ``payload`` are unused."""


class ChordMember(msgspec.Struct, array_like=True, frozen=True):
    """A group member whose outcome a chord counts (workflows)."""

    queue: str
    """The callback's queue: the chord's counter lives under its hash tag."""
    chord: str
    index: int


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
    then: ChainLink | None = None
    """Workflows: the chain step to enqueue when this task has finished."""
    member: ChordMember | None = None
    """Workflows: the chord that counts this task's outcome."""


class ErrorInfo(msgspec.Struct, array_like=True, frozen=True):
    """A remote exception, as data."""

    type: str
    message: str
    traceback: str = ""


#: Longest traceback and message kept with an error (characters; the ends are kept).
TRACEBACK_LIMIT = 16_000
MESSAGE_LIMIT = 16_000


def describe_error(exc: BaseException) -> ErrorInfo:
    """A raised exception as data: its qualified type, message and traceback,
    each bounded, and recordable whatever the exception does when described."""
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else (f"{kind.__module__}.{kind.__qualname__}")
    )
    # Task code's exception may fail to describe itself: the failure must
    # still be recorded, or the task would stay RUNNING for ever.
    try:
        message = str(exc)
    except Exception as broken:  # any failure of user code
        message = f"<{name} whose str() raised {type(broken).__name__}>"
    try:
        tb = "".join(traceback.format_exception(exc))
    except Exception as broken:  # any failure of user code
        tb = f"<the traceback could not be formatted: {type(broken).__name__}>"
    if len(tb) > TRACEBACK_LIMIT:
        tb = "...\n" + tb[-TRACEBACK_LIMIT:]
    if len(message) > MESSAGE_LIMIT:
        # An error must always be recordable, whatever its text.
        message = message[:MESSAGE_LIMIT] + f"... ({len(message):,} characters in all)"
    return ErrorInfo(name, message, tb)


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


#: An envelope as msgpack (the encoder's own method: one call less per message).
encode_envelope: Callable[[Envelope], bytes] = _encoder.encode


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


class Codec:
    """Packs envelopes into message bytes and back, signing when given a key.

    Built once per App from its ``signing_key``; the producer, the executor
    and the dead-letter listing use the same one.
    """

    __slots__ = ("signing_key",)

    def __init__(self, signing_key: str | bytes | None = None) -> None:
        if isinstance(signing_key, str):
            signing_key = signing_key.encode()
        self.signing_key: bytes | None = signing_key

    def seal(self, payload: bytes) -> bytes:
        """Sign an encoded envelope (unchanged when there is no key)."""
        return payload if self.signing_key is None else sign(payload, self.signing_key)

    def pack(self, env: Envelope) -> bytes:
        return self.seal(encode_envelope(env))

    def unpack(self, data: bytes) -> Envelope:
        """Verify (when keyed, or when the message is signed) and decode.

        Raises :class:`MessageError` saying what is wrong with the message.
        """
        if self.signing_key is not None or data[:1] == _MARK_HEAD:
            data = verify(data, self.signing_key)
        return decode_envelope(data)


# -- what crosses the Redis adapter ------------------------------------------------


class OutgoingMessage(msgspec.Struct, gc=False):
    """A message on its way into a queue.

    Untracked by the garbage collector (it only holds strings, bytes and
    numbers): a batch of ten thousand would otherwise add as many objects to
    every collection until it is sent, and push a small process into a full one.
    """

    task_id: str
    task_name: str
    payload: bytes
    fresh: bool = False
    """The producer chose the id: an existing live task of that id wins."""
    delay_ms: int = 0
    unique_key: str = ""
    unique_ttl_ms: int = 0
    priority: int = 0
    """0-9, 9 the most urgent (flow control)."""
    flow: bytes = b""
    """The task's rate and concurrency limits, packed for the scripts (empty: none)."""


class Delivery(msgspec.Struct):
    """One stream entry handed to this worker."""

    queue: str
    entry_id: str
    task_id: str
    payload: bytes
    deliveries: int = 1
    attempt: int = 0
    """How many times the task has been started, this time included (0: not yet marked)."""
    flow: bytes = b""
    """The task's rate and concurrency limits as the stream entry carries them."""
    refused: str = ""
    """Why the delivery was dead-lettered as it was delivered (attempt -1), e.g. ``replayed``."""


class FinishItem(msgspec.Struct):
    """The outcome of one delivery, as the finish script takes it."""

    entry_id: str
    task_id: str
    state: TaskStatus
    result: bytes = b""
    error: bytes = b""
    retry_delay_ms: int = 0
    payload: bytes = b""
    reason: str = ""
    unique: bool = True
    """Whether the task may hold a unique key to release (False skips a lookup)."""
    follow: bytes = b""
    """Workflows: hand-off rows the finish script writes to the queue's outbox."""
    name: str = ""
    """For the outcome's event (events on): the task's name ('': the script
    reads name, attempt and start from the record), attempt and run time (ms)."""
    attempt: int = 0
    ran_ms: int = 0

    def row(self, events: bool = False) -> tuple[list[Any], tuple[bytes, ...]]:
        """finish.lua's values for this outcome, and the bytes they give the
        lengths of (a call's rows go as one flat array, their bytes as one blob).

        Short form: entry id, task id, state (an enum: msgspec writes its value),
        body length (a success's result, else the error), 0. Long form, when
        anything else is set: 1 for that 0, then unique (1: release the unique
        key), retry delay (ms), payload length, reason, follow length; payload
        and follow follow the body. ``events``: name, attempt, ran_ms end it."""
        body = self.result if self.state is TaskStatus.SUCCEEDED else self.error
        values: list[Any] = [self.entry_id, self.task_id, self.state, len(body), 0]
        blob: tuple[bytes, ...] = (body,)
        if self.unique or self.retry_delay_ms or self.payload or self.reason or self.follow:
            values[4] = 1
            values += (int(self.unique), self.retry_delay_ms, len(self.payload))
            values += (self.reason, len(self.follow))
            blob = (body, self.payload, self.follow)
        if events:
            values += (self.name, self.attempt, self.ran_ms)
        return values, blob
