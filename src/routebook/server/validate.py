"""Checks every request passes before a use-case sees it, whatever the RPC: no NUL characters,
strings no longer than their field allows, integers that fit the store's columns.

One walk over the message's fields covers every RPC, so a field added to the proto is checked
without anyone remembering to. Messages name the field and never echo a long value back (a
huge value in an error message would itself break the gRPC trailer).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from routebook.errors import InvalidArgument

#: Strings without a limit here are limited by their use-case (query text, example text).
UNBOUNDED = frozenset({"content", "text"})
#: Longest value per field name; anything else: DEFAULT_CHARS.
LIMITS = {"description": 2000, "text_prefix": 1000, "acceptance": 1000}
DEFAULT_CHARS = 256
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def check_request(message: Message) -> None:
    _walk(message, "")


def _walk(message: Message, prefix: str) -> None:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                _check_scalar(field.message_type.fields_by_name["key"], key, f"{path} key")
                _check_scalar(
                    field.message_type.fields_by_name["value"], item, f"{path}[{_short(key)}]"
                )
        elif _is_repeated(field):
            for position, item in enumerate(value):
                _check(field, item, f"{path}[{position}]")
        else:
            _check(field, value, path)


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _check(field: FieldDescriptor, value: Any, path: str) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        _walk(value, f"{path}.")
    else:
        _check_scalar(field, value, path)


def _check_scalar(field: FieldDescriptor, value: Any, path: str) -> None:
    if field.type == FieldDescriptor.TYPE_STRING:
        if "\x00" in value:
            raise InvalidArgument(f"{path} contains a NUL character")
        if field.name == "namespace" and value != value.strip():
            # Names are compared as sent (by the keys' scopes, the catalogs, the reports), so
            # "default " must not be a second spelling of "default".
            raise InvalidArgument(f"{path} {_short(value)!r} has spaces around it")
        if field.name not in UNBOUNDED:
            limit = LIMITS.get(field.name, DEFAULT_CHARS)
            if len(value) > limit:
                raise InvalidArgument(f"{path} has {len(value)} characters; at most {limit}")
    elif field.type == FieldDescriptor.TYPE_ENUM:
        kind = field.enum_type
        if kind is not None and value not in kind.values_by_number:
            known = ", ".join(v.name for v in kind.values)
            raise InvalidArgument(f"{path} is {value}, not a value of {kind.name} ({known})")
    elif field.type == FieldDescriptor.TYPE_UINT32 and value > INT32_MAX:
        raise InvalidArgument(f"{path} is {value}; at most {INT32_MAX}")
    elif field.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_INT64) and (
        value > INT64_MAX
    ):
        raise InvalidArgument(f"{path} is {value}; at most {INT64_MAX}")


def _short(value: str) -> str:
    return value if len(value) <= 40 else value[:40] + "…"
