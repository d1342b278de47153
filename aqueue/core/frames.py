"""The small binary frames scripts publish and store beside the envelope.

* the completion push that ``finish.lua`` publishes on a queue's channel:
  for each finished task its id, state and (when small) result or error,
  each length-prefixed, so a waiter needs no read afterwards;
* a task's progress value and message, as the record keeps them.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

__all__ = ["decode_progress", "encode_progress", "parse_push"]

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()

_LENGTH = struct.Struct(">I")


def parse_push(data: bytes) -> list[tuple[str, bytes, bytes]]:
    """(task id, state, result-or-error) of each task in a framed push.

    A framed push (see ``finish.lua``) starts with a zero byte, then for each
    task three length-prefixed (4 bytes, big-endian) fields.
    """
    out = []
    pos, end = 1, len(data)
    unpack = _LENGTH.unpack_from
    while pos < end:
        parts = []
        for _ in range(3):
            (n,) = unpack(data, pos)
            pos += 4
            parts.append(data[pos : pos + n])
            pos += n
        out.append((parts[0].decode(), parts[1], parts[2]))
    return out


def encode_progress(value: Any, message: str) -> bytes:
    return _ENCODER.encode((value, message))


def decode_progress(raw: bytes) -> tuple[Any, str]:
    value, message = _DECODER.decode(raw)
    return value, str(message)
