"""A proto message built from an in-process object whose attributes are named like its fields."""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


def message_from(message: type[M], source: object, /, **given: Any) -> M:
    """A ``message`` with each of its fields that ``source`` has an attribute of the same name
    copied from it, except the ``given`` ones (renamed or converted), which are set as given.

    A field the message adds later is carried as soon as the source has it too; a field
    ``source`` lacks stays unset."""
    names = [f.name for f in message.DESCRIPTOR.fields if f.name not in given]
    copied = {name: getattr(source, name) for name in names if hasattr(source, name)}
    return message(**copied, **given)
