"""One validation layer for the structured files anyone may hand us: JSON and CSV, read into typed records.

Every structured input goes through here before the program uses a value of it: the
``--boxes``/``--clicks`` JSON (:mod:`napari_sparseseg.io.hints`), the CSV manifests
(:mod:`napari_sparseseg.io.cohort`), a batch's ``sparseseg_summary.json`` and a cohort's
``cohort.json`` read back (:mod:`napari_sparseseg.cohort.batch`, :mod:`napari_sparseseg.cohort.project`),
``session.json`` and ``model.json`` (:mod:`napari_sparseseg.io.sessions`, :mod:`napari_sparseseg.io.models`,
which add their own field checks on top). Dask scheduler addresses have their own check in
:mod:`napari_sparseseg.scheduler`.

Two steps, each bounded:

1. :func:`read_json` reads at most ``max_bytes`` (checked before anything is parsed), decodes
   UTF-8, parses (a number with more than :data:`MAX_NUMBER_DIGITS` digits is refused while
   parsing, so no huge integer is ever built) and checks the nesting depth (at most
   ``max_depth``; the parser's own recursion guard, far deeper, is caught too). Time and memory
   are linear in the file's size.
2. A *schema* turns the parsed value into typed records: :class:`Record` builds a dataclass
   whose fields say, in their metadata (:func:`spec`), what they hold (:class:`Number`,
   :class:`Text`, :class:`Flag`, :class:`Choice`, :class:`ListOf`, :class:`MapOf`,
   :class:`Maybe`, :class:`AnyOf`). A list's length is checked against its ``max_items``
   before any item is looked at, so a 100,000-item list where 1,000 are allowed costs nothing.
   Each value is visited once: no quadratic work.

Anything else is refused with one line naming the file, the field (``boxes[3].corners_mm[1]``)
and what was expected (:func:`parse`), raised as the caller's error class
(:class:`~napari_sparseseg.core.base.errors.InputError` for what the user names,
:class:`~napari_sparseseg.core.base.errors.CheckpointError` for model and session folders,
:class:`~napari_sparseseg.core.base.errors.OutputError` for an earlier run's outputs): the CLI
prints it as ``sparseseg: error: FILE: ...`` and exits 2.

Why dataclasses and not pydantic: the settings already are dataclasses whose field metadata
carries the bounds (:mod:`napari_sparseseg.core.base.config`), and the records here follow the
same pattern, with the same ``MAX_*`` limits. pydantic would be a new direct dependency (it
comes only with napari, whose supported range spans pydantic 1 and 2, with different APIs),
would cost the command line its cheap import, and words its errors its own way (several lines,
its own type names); what is needed here (types, bounds, lengths, a field path in one line) is
about 200 lines.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from napari_sparseseg.core.base.config import MAX_JSON_BYTES, MAX_JSON_DEPTH, MAX_TEXT_CHARS
from napari_sparseseg.core.base.errors import InputError, SparseSegError

__all__ = ["MAX_NUMBER_DIGITS", "AnyOf", "Anything", "Choice", "Flag", "ListOf", "MapOf", "Maybe", "Number", "Record",
           "SchemaError", "Text", "json_depth", "parse", "read_json", "show", "spec"]

#: The most digits of a number in a JSON file (a float64 has 17 significant digits and exponents up to 308).
MAX_NUMBER_DIGITS = 400


class SchemaError(Exception):
    """A value does not fit its schema: where (a field path), what was expected, what was there."""

    def __init__(self, where: str, expected: str, got: Any = MISSING):
        super().__init__(where, expected)
        self.where, self.expected, self.got = where, expected, got

    def text(self, word: str = "field") -> str:
        """``field F must be E, got G`` (or ``... is missing``); ``word`` names what F is (``"column"``)."""
        name = f"{word} {self.where}" if self.where else "the file's top level"
        if self.got is MISSING:
            return f"{name} is missing; it must be {self.expected}"
        return f"{name} must be {self.expected}, got {show(self.got)}"


def show(value: Any, room: int = 60) -> str:
    """A short, one-line, always computable description of any value (no huge repr, no recursion)."""
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, int):
        if value.bit_length() > 200:
            return f"a whole number of about {int(value.bit_length() * 0.30103)} digits"
        text = str(value)
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str):
        text = repr(value[: room + 1])
    elif isinstance(value, dict):
        keys = ", ".join(repr(str(k)[:20]) for k in list(value)[:4])
        return f"an object ({len(value)} keys{': ' + keys if keys else ''}{', ...' if len(value) > 4 else ''})"
    elif isinstance(value, (list, tuple)):
        if len(value) <= 4 and all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
            text = "[" + ", ".join(show(v, 16) for v in value) + "]"
        else:
            return f"a list of {len(value)} items"
    else:
        return f"a {type(value).__name__}"
    text = " ".join(text.split())
    return text if len(text) <= room else text[:room] + "..."


def _at(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


# ------------------------------------------------------------------------------------ validators
@dataclass(frozen=True)
class Number:
    """A finite JSON number (never true/false), optionally whole, within bounds; returns int or float."""

    ge: float | None = None
    le: float | None = None
    gt: float | None = None
    whole: bool = False
    what: str = ""

    @property
    def expected(self) -> str:
        """What a value must be, in words (for the message)."""
        if self.what:
            return self.what
        base = "a whole number" if self.whole else "a finite number"
        if self.ge is not None and self.le is not None:
            return f"{base} in {self.ge:g}..{self.le:g}"
        parts = [f">= {self.ge:g}" if self.ge is not None else "", f"> {self.gt:g}" if self.gt is not None else "",
                 f"<= {self.le:g}" if self.le is not None else ""]
        return " ".join([base, " and ".join(p for p in parts if p)]).strip()

    def __call__(self, value, where: str):
        """``value`` checked (a record built); raises :class:`SchemaError` naming ``where``."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(where, self.expected, value)
        if self.whole and not isinstance(value, int):
            raise SchemaError(where, self.expected, value)
        try:
            f = float(value)
        except OverflowError:
            raise SchemaError(where, self.expected, value) from None
        if (not math.isfinite(f) or (self.ge is not None and f < self.ge) or (self.le is not None and f > self.le)
                or (self.gt is not None and f <= self.gt)):
            raise SchemaError(where, self.expected, value)
        return value


@dataclass(frozen=True)
class Text:
    """A JSON string of at most ``max_chars`` characters; ``check`` may refuse it (raising any project error)."""

    nonempty: bool = False
    max_chars: int | None = MAX_TEXT_CHARS
    check: Callable[[str], Any] | None = None
    what: str = ""

    @property
    def expected(self) -> str:
        """What a value must be, in words (for the message)."""
        return self.what or ("a non-empty text" if self.nonempty else "a text")

    def __call__(self, value, where: str):
        """``value`` checked (a record built); raises :class:`SchemaError` naming ``where``."""
        if (not isinstance(value, str) or (self.nonempty and not value.strip())
                or (self.max_chars is not None and len(value) > self.max_chars)):
            raise SchemaError(where, self.expected + (f" of at most {self.max_chars} characters"
                                                      if isinstance(value, str) and self.max_chars and len(value) > self.max_chars
                                                      else ""), value)
        if self.check is not None:
            try:
                self.check(value)
            except SparseSegError as exc:
                raise SchemaError(where, f"{self.expected} ({exc.message.rstrip('.')})", value) from None
        return value


@dataclass(frozen=True)
class Flag:
    """true or false."""

    expected: str = "true or false"

    def __call__(self, value, where: str):
        """``value`` checked (a record built); raises :class:`SchemaError` naming ``where``."""
        if not isinstance(value, bool):
            raise SchemaError(where, self.expected, value)
        return value


@dataclass(frozen=True)
class Choice:
    """One of a few exact values."""

    values: tuple
    what: str = ""

    @property
    def expected(self) -> str:
        """What a value must be, in words (for the message)."""
        return self.what or "one of " + ", ".join(json.dumps(v) for v in self.values)

    def __call__(self, value, where: str):
        """``value`` checked (a record built); raises :class:`SchemaError` naming ``where``."""
        if isinstance(value, (dict, list)) or not any(value == v and type(value) is type(v) for v in self.values):
            raise SchemaError(where, self.expected, value)
        return value


@dataclass(frozen=True)
class ListOf:
    """A JSON list of ``item``: at most ``max_items`` (checked first), exactly ``exact`` if given; returns a list."""

    item: Any
    max_items: int | None = None
    min_items: int = 0
    exact: int | None = None
    what: str = ""

    @property
    def expected(self) -> str:
        """What a value must be, in words (for the message)."""
        if self.what:
            return self.what
        if self.exact is not None:
            return f"a list of {self.exact} items"
        if self.max_items is not None:
            return f"a list of {self.min_items}..{self.max_items} items"
        return "a list" + (f" of at least {self.min_items} items" if self.min_items else "")

    def __call__(self, value, where: str):
        """``value`` checked (a record built); raises :class:`SchemaError` naming ``where``."""
        if not isinstance(value, list):
            raise SchemaError(where, self.expected, value)
        n = len(value)
        if (self.exact is not None and n != self.exact) or n < self.min_items or (
                self.max_items is not None and n > self.max_items):
            raise SchemaError(where, self.expected, value)
        return [self.item(v, _at(where, i)) for i, v in enumerate(value)]


@dataclass(frozen=True)
class MapOf:
    """A JSON object of text keys (at most ``max_items``) to ``value``; returns a dict."""

    value: Any
    max_items: int | None = None
    what: str = ""

    @property
    def expected(self) -> str:
        """What a value must be, in words (for the message)."""
        return self.what or "an object" + (f" of at most {self.max_items} entries" if self.max_items else "")

    def __call__(self, value, where: str):
        """``value`` checked (a record built); raises :class:`SchemaError` naming ``where``."""
        if not isinstance(value, dict) or (self.max_items is not None and len(value) > self.max_items):
            raise SchemaError(where, self.expected, value)
        return {k: self.value(v, _at(where, k)) for k, v in value.items()}


@dataclass(frozen=True)
class Maybe:
    """null (``None``) or ``inner``."""

    inner: Any

    @property
    def expected(self) -> str:
        """What a value must be, in words (for the message)."""
        return f"{self.inner.expected} or null"

    def __call__(self, value, where: str):
        """``value`` checked (a record built); raises :class:`SchemaError` naming ``where``."""
        if value is None:
            return None
        try:
            return self.inner(value, where)
        except SchemaError as exc:
            if exc.where == where and exc.expected == self.inner.expected:  # not a field inside: null was allowed too
                raise SchemaError(where, self.expected, value) from None
            raise


@dataclass(frozen=True)
class AnyOf:
    """The first option the value fits; ``what`` says what is expected when none does.

    An option whose kind fits (a list for a :class:`ListOf`, an object for a :class:`Record`)
    but whose content does not gives its own, more precise message.
    """

    options: tuple
    what: str

    @property
    def expected(self) -> str:
        """What a value must be, in words (for the message)."""
        return self.what

    def __call__(self, value, where: str):
        """``value`` checked (a record built); raises :class:`SchemaError` naming ``where``."""
        for option in self.options:
            try:
                return option(value, where)
            except SchemaError as exc:
                if exc.where != where:  # the kind fitted, a field inside did not: that is the message
                    raise
        raise SchemaError(where, self.what, value)


@dataclass(frozen=True)
class Anything:
    """Any JSON value (already bounded in size and depth by :func:`read_json`)."""

    expected: str = "any value"

    def __call__(self, value, where: str):
        """``value`` checked (a record built); raises :class:`SchemaError` naming ``where``."""
        return value


@dataclass(frozen=True)
class Record:
    """A JSON object as the dataclass ``cls``: each field read by its :func:`spec`; other keys are ignored.

    A field without a default must be present. Keys are the field names unless a spec gives
    ``key`` (``"class"`` is a Python keyword). Returns ``cls(**fields)``.
    """

    cls: type
    what: str = ""

    @property
    def expected(self) -> str:
        """What a value must be, in words (for the message)."""
        return self.what or "an object"

    def __call__(self, value, where: str):
        """``value`` checked (a record built); raises :class:`SchemaError` naming ``where``."""
        if not isinstance(value, dict):
            raise SchemaError(where, self.expected, value)
        out = {}
        for f in fields(self.cls):
            if "schema" not in f.metadata:
                continue
            key = f.metadata.get("key") or f.name
            if key in value:
                out[f.name] = f.metadata["schema"](value[key], _at(where, key))
            elif f.default is MISSING and f.default_factory is MISSING:
                raise SchemaError(_at(where, key), f.metadata["schema"].expected)
        return self.cls(**out)


def spec(schema, default: Any = MISSING, *, key: str | None = None, factory: Any = None) -> Any:
    """A dataclass field read by ``schema`` (see :class:`Record`); ``key`` is its JSON name if not the field's."""
    meta = {"schema": schema, "key": key}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ------------------------------------------------------------------------------------ reading
class _TooLong(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_DIGITS:
        raise _TooLong(f"a number of {len(text)} digits (at most {MAX_NUMBER_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise _TooLong(f"a number of {len(text)} characters (at most {MAX_NUMBER_DIGITS})")
    return float(text)


def json_depth(value) -> int:
    """How deep lists and objects nest in ``value`` (0 for a number or text); iterative, linear."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, list):
            continue
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in v if isinstance(c, (dict, list)))
    return deepest


def read_json(path, what: str, error: type[SparseSegError] = InputError, max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_JSON_DEPTH, at: str | os.PathLike | None = None, remedy: str = ""):
    """The parsed content of a JSON file, read within the limits (see the module docstring).

    Args:
        path: the file.
        what: its name in messages, e.g. ``"boxes file"``.
        error: the error class raised (its ``path`` is ``at`` or ``path``).
        max_bytes: the largest file read; larger is refused before reading it.
        max_depth: the deepest nesting of lists and objects.
        at: the path the error names (a folder, for a file inside a model or session folder).
        remedy: appended to every message (what to do).

    Raises:
        ``error``: missing, a folder, unreadable, too large, not UTF-8, not JSON, a number
            with too many digits, nested too deep.
    """
    where = path if at is None else at
    tail = f"; {remedy}" if remedy else ""

    def bad(text: str) -> SparseSegError:
        return error(f"{text}{tail}.", path=where)

    try:
        with open(os.fspath(path), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise bad(f"the {what} is {size} bytes, more than the {max_bytes} a {what} may have")
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise bad(f"no {what} at {path}; check the path") from None
    except IsADirectoryError:
        raise bad(f"the {what} {path} is a folder, not a JSON file") from None
    except OSError as exc:
        raise bad(f"cannot read the {what} ({exc.strerror or exc})") from None
    if len(data) > max_bytes:  # grew while read, or a special file
        raise bad(f"the {what} is more than the {max_bytes} bytes a {what} may have")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise bad(f"the {what} is not UTF-8 text (byte {exc.start}); it must be JSON") from None
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
    except _TooLong as exc:
        raise bad(f"the {what} holds {exc}") from None
    except RecursionError:
        raise bad(f"the {what} nests lists or objects deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError included
        raise bad(f"the {what} is not valid JSON ({' '.join(str(exc).split())[:120]})") from None
    if json_depth(value) > max_depth:
        raise bad(f"the {what} nests lists or objects deeper than {max_depth} levels")
    return value


def parse(schema, value, what: str, path=None, error: type[SparseSegError] = InputError, remedy: str = "",
          root: str = ""):
    """``schema(value)``, or ``error`` with one line: the file, the field, what was expected, what to do.

    Args:
        schema: a validator of this module (e.g. ``Record(Box)``, ``ListOf(...)``).
        value: the parsed JSON value (or a row of a CSV).
        what: the kind of file for the message, e.g. ``"boxes file"``.
        path: the file (the error's ``path``).
        error: the error class.
        remedy: what to do, appended to the message.
        root: the name of the value in field paths (``"boxes"`` gives ``boxes[3].class``); none for the file's top level.
    """
    try:
        return schema(value, root)
    except SchemaError as exc:
        raise error(f"in the {what}, {exc.text()}" + (f"; {remedy}" if remedy else "") + ".", path=path) from None
