"""Test verdicts decided by the trusted parent, never by the program under test.

An MBPP/HumanEval-style test is one ``assert`` over an expression such as
``sorted(f([3, 1])) == [1, 3]``. Its *candidate expressions* are the smallest subexpressions
that reach the program's names (``f([3, 1])`` here, grown through attribute access,
subscripts and calls on them, so ``Pair(1, 2).a`` stays whole). Only those go to the sandbox,
which sends back each one's value as plain data; the parent puts the values in their place and
evaluates the rest of the test itself (``sorted(v0) == [1, 3]``). The program never sees the
expected side, so printing, forging the channel, swapping builtins or returning an object whose
``__eq__`` is always true cannot pass a test: only computing the right value does.
"""

from __future__ import annotations

import ast
import base64
import bisect
import builtins
import cmath
import collections
import decimal
import fractions
import functools
import heapq
import itertools
import json
import math
import operator
import re
import statistics
import string
from dataclasses import dataclass
from typing import Any, Sequence

_SAFE_BUILTINS = {
    name: getattr(builtins, name)
    for name in (
        "abs all any ascii bin bool bytes chr complex dict divmod enumerate filter float format frozenset "
        "hex int isinstance len list map max min oct ord pow range repr reversed round set slice sorted str "
        "sum tuple type zip True False None"
    ).split()
}
_MODULES = (bisect, cmath, collections, decimal, fractions, functools, heapq, itertools, math, operator, re)
TRUSTED_NAMES: dict[str, Any] = {**_SAFE_BUILTINS, **{m.__name__: m for m in _MODULES}}
TRUSTED_NAMES.update(statistics=statistics, string=string)
_VALUES = "__rlxf_values"
_CONTAINERS = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "dict": dict}
MAX_ITEMS = 10_000
"""Items in one decoded value, counted across every container it nests: a set of keys that all
collide costs the trainer O(n²), and a list becomes such a set in a check like ``set(f(x)) == {...}``."""


class UnsupportedTest(ValueError):
    """A test this module cannot split into candidate expressions and a trusted check."""


@dataclass(frozen=True)
class SplitTest:
    """A test as the expressions the sandbox evaluates and the check the parent runs on their values."""

    source: str
    candidates: tuple[str, ...]
    check: Any  # a code object over ``__rlxf_values``

    def passes(self, values: Sequence[Any]) -> bool:
        namespace = {"__builtins__": {}, **TRUSTED_NAMES, _VALUES: list(values)}
        try:
            return bool(eval(self.check, namespace))  # trusted test code over plain data
        except Exception:  # noqa: BLE001 - a value of the wrong shape fails its test
            return False


def split_test(source: str) -> SplitTest:
    """``source`` (one ``assert`` statement) split into candidate expressions and a trusted check."""
    try:
        tree = ast.parse(source.strip())
    except SyntaxError as error:
        raise UnsupportedTest(f"unit test {source!r} is not valid Python: {error.msg}") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise UnsupportedTest(f"unit test {source!r} must be a single assert statement")
    expression = tree.body[0].test
    bound = {node.id for node in ast.walk(expression) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    bound |= {arg.arg for node in ast.walk(expression) if isinstance(node, ast.Lambda) for arg in node.args.args}
    candidates: list[str] = []
    check = _Replace(bound, candidates).visit(expression)
    checked = ast.fix_missing_locations(ast.Expression(check))
    return SplitTest(source, tuple(candidates), compile(checked, "<unit test>", "eval"))


class _Replace(ast.NodeTransformer):
    """Replaces each maximal candidate expression by ``__rlxf_values[k]``."""

    def __init__(self, bound: set[str], candidates: list[str]):
        self.bound, self.candidates = bound, candidates

    def visit(self, node):
        if isinstance(node, ast.expr) and _reaches_program(node, self.bound):
            if _names(node) & self.bound:
                raise UnsupportedTest(
                    f"unit test uses a name bound inside the test ({sorted(_names(node) & self.bound)}) "
                    "in a call to the program; write one assert per case"
                )
            self.candidates.append(ast.unparse(node))
            index = ast.Constant(len(self.candidates) - 1)
            return ast.copy_location(ast.Subscript(ast.Name(_VALUES, ast.Load()), index, ast.Load()), node)
        return self.generic_visit(node)


def _reaches_program(node: ast.expr, bound: set[str]) -> bool:
    """Whether ``node`` is a program name or an access on one: ``f``, ``f(x)``, ``obj.a[0]``, ``C().m()``."""
    while isinstance(node, (ast.Call, ast.Attribute, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return isinstance(node, ast.Name) and node.id not in TRUSTED_NAMES and node.id not in bound


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def decode(data: Any) -> Any:
    """A value from the sandbox's tagged JSON, built only from plain built-in types, of at most
    `MAX_ITEMS` items in all."""
    return _decode(data, 0, [MAX_ITEMS])


def _decode(data: Any, depth: int, budget: list[int]) -> Any:
    """``budget`` holds how many more items the whole value may have."""
    if depth > 100:
        raise ValueError("value nested too deeply")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if not isinstance(data, dict) or len(data) != 1:
        raise ValueError("malformed value")
    ((tag, body),) = data.items()
    if tag == "bytes":
        return base64.b64decode(body)
    if tag == "complex":
        return complex(*map(float, body))
    if tag not in _CONTAINERS or not isinstance(body, list):
        raise ValueError(f"unknown value tag {tag!r} or malformed body")
    budget[0] -= len(body)
    if budget[0] < 0:
        raise ValueError(f"a value of more than {MAX_ITEMS} items")
    if tag == "dict":
        return {_decode(key, depth + 1, budget): _decode(value, depth + 1, budget) for key, value in body}
    items = [_decode(item, depth + 1, budget) for item in body]
    return items if tag == "list" else _CONTAINERS[tag](items)


def decode_line(line: str) -> dict:
    """One message from the sandbox: ``{"index": k, "value": ...}``, ``{"index": k, "error": ...}`` or
    ``{"program_error": ...}``; anything else is an error."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("malformed message")
    if "value" in message:
        message["value"] = decode(message["value"])
    return message
