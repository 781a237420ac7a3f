"""Helpers shared by the interface round-trip test and its peer process.

`sample()` fills every field of any generated message, recursively, with distinct non-default
values, so a round trip that loses or mangles any field (including ones added later) fails.
"""
from __future__ import annotations

import importlib
import itertools
from pathlib import Path

from rosidl_parser import definition

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "workcell_segmentation"


def interface_names(kind: str) -> list[str]:
    """Names of the interfaces defined in msg/ or srv/ of the checkout."""
    return sorted(path.stem for path in (REPO / kind).glob(f"*.{kind}"))


def message_classes() -> dict[str, type]:
    module = importlib.import_module(f"{PACKAGE}.msg")
    return {name: getattr(module, name) for name in interface_names("msg")}


def service_classes() -> dict[str, type]:
    module = importlib.import_module(f"{PACKAGE}.srv")
    return {name: getattr(module, name) for name in interface_names("srv")}


def sample(message_class: type, seed: int = 1):
    return _message(message_class, itertools.count(seed))


def _message(message_class: type, counter):
    message = message_class()
    for field, slot in zip(message_class.get_fields_and_field_types(), message_class.SLOT_TYPES):
        setattr(message, field, _value(slot, counter))
    return message


def _value(slot, counter):
    if isinstance(slot, definition.AbstractSequence):
        length = 2 if isinstance(slot, definition.UnboundedSequence) else min(2, slot.maximum_size)
        return [_value(slot.value_type, counter) for _ in range(length)]
    if isinstance(slot, definition.Array):
        return [_value(slot.value_type, counter) for _ in range(slot.size)]
    if isinstance(slot, definition.AbstractGenericString):
        return f"s{next(counter)}-ü"  # non-ASCII: the wire is UTF-8
    if isinstance(slot, definition.NamespacedType):
        module = importlib.import_module(".".join(slot.namespaces))
        return _message(getattr(module, slot.name), counter)
    return _basic(slot.typename, next(counter))


def _basic(typename: str, n: int):
    if typename == "boolean":
        return n % 2 == 1
    if typename in ("float", "double"):
        return n + 0.25  # exact in float32
    if typename == "octet":
        return bytes([n % 256])
    if typename == "char":
        return n % 128
    return n % 128  # every integer type holds 0..127
