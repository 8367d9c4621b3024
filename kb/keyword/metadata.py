"""The chunks' filterable metadata, per slot and column by column, so a filter is a numpy mask.

Filters (``kb.filters``: Chroma's ``where`` grammar) used to be checked by asking Chroma for each
candidate's metadata (Chroma has no metadata index: a ``where`` scans the collection). Here every
metadata key is a column over the slots:

- ``kind`` uint8: ``MISSING``, ``BOOL``, ``NUMBER``, ``STRING`` or ``OTHER`` (a value of no filterable
  type, which equals nothing);
- ``num`` float64: the number (booleans as 0/1);
- ``code`` int32: a string's index in the key's string table (each distinct string stored once).

``mask(where)`` evaluates a normalised filter over all slots with the same semantics as
``kb.filters.matches`` (a number equals a number of either type, a boolean only a boolean, ``$ne``
and ``$nin`` match chunks without the key, ordering compares numbers only). It returns None when a
filter cannot be evaluated exactly here — a key in ``NOT_HELD``, or an integer beyond 2**53 (float64
would round it) — and the caller then filters the old way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

MISSING, BOOL, NUMBER, STRING, OTHER = 0, 1, 2, 3, 4
NOT_HELD = frozenset({"parent_text"})  # large, repeated per child chunk, and never a sensible filter
EXACT_INT = 2**53  # integers beyond this do not survive float64


class _Key:
    """One key's three columns (growable) and its string table."""

    def __init__(self, size: int, kind=None, num=None, code=None, strings: list[str] | None = None) -> None:
        cap = max(1024, size)
        self.kind = np.zeros(cap, np.uint8)
        self.num = np.zeros(cap, np.float64)
        self.code = np.zeros(cap, np.int32)
        if kind is not None:
            self.kind[:size], self.num[:size], self.code[:size] = kind, num, code
        self.strings: list[str] = strings or []
        self._code_of: dict[str, int] | None = None
        self.inexact = bool(kind is not None and np.any((kind[:size] == NUMBER) & (np.abs(num[:size]) > EXACT_INT)))

    def grow(self, size: int) -> None:
        if size > len(self.kind):
            cap = max(size, 2 * len(self.kind))
            for name in ("kind", "num", "code"):
                old = getattr(self, name)
                new = np.zeros(cap, old.dtype)
                new[: len(old)] = old
                setattr(self, name, new)

    def code_of(self, text: str, add: bool = False) -> int:
        if self._code_of is None:
            self._code_of = {s: i for i, s in enumerate(self.strings)}
        code = self._code_of.get(text)
        if code is None and add:
            code = self._code_of[text] = len(self.strings)
            self.strings.append(text)
        return -1 if code is None else code

    def set(self, slot: int, value) -> None:
        if isinstance(value, bool):
            self.kind[slot], self.num[slot] = BOOL, float(value)
        elif isinstance(value, int | float):
            if isinstance(value, float) and not math.isfinite(value):
                self.kind[slot] = OTHER
                return
            self.kind[slot], self.num[slot] = NUMBER, float(value)
            if abs(value) > EXACT_INT:
                self.inexact = True
        elif isinstance(value, str):
            self.kind[slot], self.code[slot] = STRING, self.code_of(value, add=True)
        else:
            self.kind[slot] = OTHER


class MetadataColumns:
    """Every key's columns over ``size`` slots."""

    def __init__(self, size: int = 0, keys: dict[str, _Key] | None = None) -> None:
        self.size = size
        self.keys: dict[str, _Key] = keys or {}

    # ------------------------------------------------------------------ writes
    def append(self, metadatas: Sequence[Mapping | None]) -> None:
        """Slots for ``len(metadatas)`` more chunks (None: no metadata known)."""
        first = self.size
        self.size += len(metadatas)
        for key in self.keys.values():
            key.grow(self.size)
            key.kind[first : self.size] = MISSING
        for i, meta in enumerate(metadatas):
            if meta:
                self._set(first + i, meta)

    def replace(self, slot: int, meta: Mapping) -> None:
        """A chunk's metadata changed (its text did not): its values become ``meta``'s."""
        for key in self.keys.values():
            key.kind[slot] = MISSING
        self._set(slot, meta)

    def _set(self, slot: int, meta: Mapping) -> None:
        for name, value in meta.items():
            if name in NOT_HELD:
                continue
            key = self.keys.get(name)
            if key is None:
                key = self.keys[name] = _Key(self.size)
            key.set(slot, value)

    # ------------------------------------------------------------------ filters
    def mask(self, where: dict) -> np.ndarray | None:
        """The slots whose metadata satisfies ``where`` (normalised), or None (see the module)."""
        try:
            return self._mask(where)
        except _Fallback:
            return None

    def _mask(self, where: dict) -> np.ndarray:
        ((name, cond),) = where.items()
        if name == "$and":
            out = self._mask(cond[0])
            for part in cond[1:]:
                out &= self._mask(part)
            return out
        if name == "$or":
            out = self._mask(cond[0])
            for part in cond[1:]:
                out |= self._mask(part)
            return out
        if name in NOT_HELD:
            raise _Fallback
        if not isinstance(cond, dict):
            cond = {"$eq": cond}
        ((op, operand),) = cond.items()
        key = self.keys.get(name)
        n = self.size
        if key is None:  # no chunk has the key
            return np.full(n, op in ("$ne", "$nin"), np.bool_)
        if key.inexact or (isinstance(operand, int) and abs(operand) > EXACT_INT):
            raise _Fallback
        kind = key.kind[:n]
        if op in ("$eq", "$ne"):
            hit = self._equal(key, operand)
            return hit if op == "$eq" else ~hit
        if op in ("$in", "$nin"):
            if any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > EXACT_INT for v in operand):
                raise _Fallback
            hit = self._member(key, operand)
            return hit if op == "$in" else ~hit
        num = key.num[:n]
        compare = {"$gt": np.greater, "$gte": np.greater_equal, "$lt": np.less, "$lte": np.less_equal}[op]
        return (kind == NUMBER) & compare(num, float(operand))

    def _equal(self, key: _Key, operand) -> np.ndarray:
        n = self.size
        kind = key.kind[:n]
        if isinstance(operand, bool):
            return (kind == BOOL) & (key.num[:n] == float(operand))
        if isinstance(operand, int | float):
            return (kind == NUMBER) & (key.num[:n] == float(operand))
        code = key.code_of(operand)
        return (kind == STRING) & (key.code[:n] == code) if code >= 0 else np.zeros(n, np.bool_)

    def _member(self, key: _Key, operands: list) -> np.ndarray:
        n = self.size
        kind = key.kind[:n]
        if isinstance(operands[0], str):  # $in lists hold one type (kb.filters)
            codes = [c for c in (key.code_of(v) for v in operands) if c >= 0]
            return (kind == STRING) & np.isin(key.code[:n], codes) if codes else np.zeros(n, np.bool_)
        wanted = np.asarray([float(v) for v in operands])
        expected = BOOL if isinstance(operands[0], bool) else NUMBER
        return (kind == expected) & np.isin(key.num[:n], wanted)

    # ------------------------------------------------------------------ snapshot
    def compacted(self, live: np.ndarray) -> tuple[list[str], dict[str, np.ndarray], list[list[str]]]:
        """For the live slots: key names, their ``meta.<j>.kind|num|code`` arrays, and each key's
        string table (only the strings still used)."""
        names: list[str] = []
        arrays: dict[str, np.ndarray] = {}
        tables: list[list[str]] = []
        for name, key in self.keys.items():
            kind = key.kind[: self.size][live]
            if not np.any(kind != MISSING):
                continue  # no live chunk has it any more
            is_string = kind == STRING
            code = key.code[: self.size][live]
            used = np.unique(code[is_string])
            remap = np.zeros(max(1, len(key.strings)), np.int32)
            remap[used] = np.arange(len(used), dtype=np.int32)
            j = len(names)
            names.append(name)
            tables.append([key.strings[c] for c in used.tolist()])
            arrays[f"meta.{j}.kind"] = kind
            arrays[f"meta.{j}.num"] = np.where((kind == NUMBER) | (kind == BOOL), key.num[: self.size][live], 0.0)
            arrays[f"meta.{j}.code"] = np.where(is_string, remap[np.where(is_string, code, 0)], 0).astype(np.int32)
        return names, arrays, tables

    @classmethod
    def of(cls, size: int, names: list[str], arrays: Mapping[str, np.ndarray], strings: list[list[str]]):
        keys = {}
        for j, name in enumerate(names):
            kind, num, code = (np.asarray(arrays[f"meta.{j}.{part}"]) for part in ("kind", "num", "code"))
            if not len(kind) == len(num) == len(code) == size:
                raise ValueError(f"metadata column {name!r} does not match the slots")
            if np.any(kind > OTHER) or np.any((kind == STRING) & ((code < 0) | (code >= len(strings[j])))):
                raise ValueError(f"metadata column {name!r} holds unknown values")
            keys[name] = _Key(size, kind, num, code, strings[j])
        return cls(size, keys)


class _Fallback(Exception):
    """The filter cannot be evaluated exactly from the columns."""
