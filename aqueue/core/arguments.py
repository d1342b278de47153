"""How a task's arguments are checked on the producer and typed on the worker.

The producer checks a call against the signature (cheaply, for the common
all-positional case) before anything is encoded; the worker decodes the
wire arguments against the function's annotations with msgspec, so a Struct,
dataclass, datetime or UUID argument arrives as that type. The producer runs
the worker's very conversion on the encoded arguments (:meth:`ArgSpec.check_types`),
so an argument the worker would refuse is refused at ``enqueue()`` instead.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from .context import Context
from .errors import EnqueueError
from .handoffs import ext_hook

__all__ = ["ArgSpec"]

# ext_hook: a chord's callback gets its failed members as TaskFailed (workflows).
_args_decoder = msgspec.msgpack.Decoder(list[Any], ext_hook=ext_hook)
_kwargs_decoder = msgspec.msgpack.Decoder(dict[str, Any])
#: The encoding of no keyword arguments, which needs no decoding.
EMPTY_MAP = msgspec.msgpack.encode({})
#: The same as the worker sees them (the envelope defers arguments as ``Raw``, which
#: never compares equal to bytes), and no positional arguments likewise.
_EMPTY_MAP_RAW = msgspec.Raw(EMPTY_MAP)
_EMPTY_ARGS = msgspec.msgpack.encode([])
_EMPTY_ARGS_RAW = msgspec.Raw(_EMPTY_ARGS)
#: Where msgspec says a value went wrong: "... - at `$.name...`".
_AT_PARAMETER = re.compile(
    r"^(?P<what>.*) - at `\$\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^`]*)`$"
)


class ArgSpec:
    """How a task's arguments are checked on the producer and typed on the worker."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.signature = inspect.signature(fn)
        self._hints: dict[str, Any] | None = None
        self._struct: type[msgspec.Struct] | None = None
        self.context_param: str | None = None
        params = []
        for p in self.signature.parameters.values():
            if (
                p.annotation is Context
                or p.annotation == "Context"
                or (isinstance(p.annotation, str) and p.annotation.endswith(".Context"))
            ):
                self.context_param = p.name
            else:
                params.append(p)
        self.call_signature = self.signature.replace(parameters=params)
        self.has_variadic = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)
        # Fast path: a call with positional arguments only, to a function whose
        # parameters are all positional, is valid when the count fits.
        self._positional = all(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params
        )
        self._max_args = len(params)
        self._min_args = sum(1 for p in params if p.default is p.empty)
        #: A call without arguments fits as it is: nothing to decode or check.
        self._bare_fits = self._positional and self._min_args == 0
        self._plain_types: list[type] | None = None

    def hints(self) -> dict[str, Any]:
        if self._hints is None:
            try:
                self._hints = typing.get_type_hints(self.fn)
            except Exception:  # unresolvable forward references: fall back to no typing
                self._hints = {}
        return self._hints

    def return_type(self) -> Any:
        return self.hints().get("return", Any)

    def plain_call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
        """True when the call needs no :meth:`check` nor :meth:`check_types` (and its
        decoded arguments no :meth:`bind`): all positional, as many as the signature
        takes, each of its builtin annotated type (or unannotated)."""
        if kwargs or not self._positional or not self._min_args <= len(args) <= self._max_args:
            return False
        if not args:
            return True
        plain = self._plain()
        if plain is None:
            return False
        for value, tp in zip(args, plain, strict=False):
            if tp is not object and type(value) is not tp:
                return False
        return True

    def check(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError when the call does not fit the signature."""
        if not kwargs and self._positional and self._min_args <= len(args) <= self._max_args:
            return
        self.call_signature.bind(*args, **kwargs)

    def check_types(
        self,
        task_name: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        encoded_args: bytes,
        encoded_kwargs: bytes,
    ) -> None:
        """Raise EnqueueError, naming the parameter, when the worker would refuse the arguments.

        Builtin scalars of the annotated types pass without decoding; anything
        else goes through the worker's own decoding and conversion.
        """
        if self.plain_call(args, kwargs):
            return
        try:
            self.decode(encoded_args, encoded_kwargs)
        except msgspec.ValidationError as exc:
            problem = _name_the_parameter(str(exc))
        except (TypeError, msgspec.DecodeError, RecursionError) as exc:
            problem = f"the arguments can't be decoded as the worker would: {exc}"
        else:
            return
        raise EnqueueError(f"{task_name}{self.call_signature}: {problem}. Nothing was enqueued")

    def decode(
        self, encoded_args: bytes | msgspec.Raw, encoded_kwargs: bytes | msgspec.Raw
    ) -> tuple[list[Any], dict[str, Any]]:
        """Wire arguments (msgpack) to typed call arguments, as the worker calls the task.

        Raises TypeError, msgspec.ValidationError or msgspec.DecodeError when
        they don't fit.
        """
        no_kwargs = encoded_kwargs in (_EMPTY_MAP_RAW, EMPTY_MAP)
        if no_kwargs and self._bare_fits and encoded_args in (_EMPTY_ARGS_RAW, _EMPTY_ARGS):
            return [], {}
        raw_args = _args_decoder.decode(encoded_args)
        raw_kwargs = {} if no_kwargs else _kwargs_decoder.decode(encoded_kwargs)
        return self.bind(raw_args, raw_kwargs)

    def _plain(self) -> list[type] | None:
        """The parameters' types when every one is a builtin scalar (or untyped)."""
        if self._plain_types is None:
            hints = self.hints()
            types: list[type] = []
            for p in self.call_signature.parameters.values():
                tp = hints.get(p.name, object)
                if tp is Any:
                    tp = object
                if tp not in (int, str, float, bool, bytes, object):
                    self._plain_types = []
                    return None
                types.append(tp)
            self._plain_types = types
        return self._plain_types or None

    def _args_struct(self) -> type[msgspec.Struct]:
        if self._struct is None:
            hints = self.hints()
            fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
            for p in self.call_signature.parameters.values():
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                tp = hints.get(p.name, Any)
                if p.default is p.empty:
                    fields.append((p.name, tp))
                else:
                    fields.append((p.name, tp, p.default))
            self._struct = msgspec.defstruct("Arguments", fields, kw_only=True)
        return self._struct

    def bind(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Turn decoded wire arguments into typed call arguments.

        Raises TypeError or msgspec.ValidationError when they don't fit.
        """
        if self.plain_call(args, kwargs):
            return args, {}
        bound = self.call_signature.bind(*args, **kwargs)
        if self.has_variadic:
            # Variadic signatures are passed through as decoded.
            return list(bound.args), dict(bound.kwargs)
        typed = msgspec.convert(bound.arguments, self._args_struct(), strict=False)
        call_kwargs = {name: getattr(typed, name) for name in typed.__struct_fields__}
        positional = [
            call_kwargs.pop(p.name)
            for p in self.call_signature.parameters.values()
            if p.kind is p.POSITIONAL_ONLY
        ]
        return positional, call_kwargs


def _name_the_parameter(message: str) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.x`" as "argument 'x': expected ..."."""
    found = _AT_PARAMETER.match(message)
    if found is None:
        return message
    what = found["what"]
    where = f" (at {found['name']}{found['rest']})" if found["rest"] else ""
    return f"argument {found['name']!r}{where}: {what[:1].lower()}{what[1:]}"
