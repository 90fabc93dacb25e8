"""Selecting scenes from the catalog by a dataset spec's filters.

Filters are parsed with `ast` and evaluated over catalog columns by our own small interpreter:
only column names, constants, comparisons, boolean and arithmetic operators and `in [...]` lists
are accepted, so a filter can never run code. A filter is also bounded before it runs, so that one
that validates (on the empty catalog, when the spec is read) cannot exhaust memory or time on the
real catalog: its length, nesting depth, string literals and `in` lists are bounded, integers fit
64 bits, arithmetic takes numbers only (no string or list repetition) and text is compared only
with text. Every problem, at validation or evaluation, is a FilterError naming `scene_filter`.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jadd_dagster.scenes import CATALOG_COLUMNS, empty_catalog
from jadd_dagster.spec import DatasetSpec

MAX_FILTER_CHARS = 4000
MAX_DEPTH = 40  # syntax-tree levels; "a > 1 and not (b < 2)" has 5
MAX_STRING_CHARS = 256
MAX_LIST_ITEMS = 500
INT64 = (-(2**63), 2**63 - 1)
TEXT_COLUMNS = frozenset({"scene_id", "log_id", "location", "vehicle", "channels", "date"})
NUMBER, TEXT = "number", "text"  # what a filter's sub-expression gives; conditions are numbers (0/1)

_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class FilterError(ValueError):
    """A scene filter that is not a valid expression over catalog columns."""


def check_filter(expression: str) -> None:
    """Raise FilterError if the expression would not evaluate over the catalog."""
    if expression.strip():
        _evaluate(_parse(expression), empty_catalog(), expression)


def _quoted(source: str) -> str:
    return repr(source if len(source) <= 120 else f"{source[:120]}...")


def _parse(expression: str) -> ast.expr:
    """The checked syntax tree of a filter (see _check): FilterError for anything else."""
    if len(expression) > MAX_FILTER_CHARS:
        raise FilterError(
            f"scene_filter: {len(expression)} characters, at most {MAX_FILTER_CHARS}; "
            "list many scenes with include_scenes instead"
        )
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError as error:
        raise FilterError(f"scene_filter: not a valid expression ({error.msg}): {_quoted(expression)}") from None
    except (RecursionError, MemoryError, ValueError):
        raise FilterError(f"scene_filter: nested too deeply: {_quoted(expression)}") from None
    _check_depth(node, expression)
    if _check(node, expression) != NUMBER:
        raise FilterError(f"scene_filter: must be a condition, e.g. location == 'x': {_quoted(expression)}")
    return node


def _check_depth(root: ast.expr, source: str) -> None:
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise FilterError(f"scene_filter: nested more than {MAX_DEPTH} levels deep: {_quoted(source)}")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _check(n: ast.AST, source: str) -> str:
    """What the node gives (NUMBER or TEXT), or FilterError for what a filter may not do."""
    if isinstance(n, ast.BoolOp) or (isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not)):
        for operand in n.values if isinstance(n, ast.BoolOp) else [n.operand]:
            if _check(operand, source) != NUMBER:
                raise FilterError(f"scene_filter: and/or/not take conditions, not text ({ast.unparse(operand)!r})")
        return NUMBER
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
        if _check(n.operand, source) != NUMBER:
            raise FilterError(f"scene_filter: arithmetic takes numbers, not text ({ast.unparse(n)!r})")
        return NUMBER
    if isinstance(n, ast.Compare):
        left = _check(n.left, source)
        for op, right_node in zip(n.ops, n.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(right_node, (ast.List, ast.Tuple, ast.Set)):
                    raise FilterError(f"scene_filter: 'in' needs a list, e.g. x in ['a', 'b']: {_quoted(source)}")
                if len(right_node.elts) > MAX_LIST_ITEMS:
                    raise FilterError(f"scene_filter: an 'in' list has {len(right_node.elts)} items, at most {MAX_LIST_ITEMS}")
                for item in right_node.elts:
                    if not isinstance(item, ast.Constant) and not (
                        isinstance(item, ast.UnaryOp) and isinstance(item.op, ast.USub) and isinstance(item.operand, ast.Constant)
                    ):
                        raise FilterError(f"scene_filter: 'in' lists hold constants, not {ast.unparse(item)!r}")
                    _check(item, source)
                right = left
            elif type(op) not in _COMPARE:
                raise FilterError(f"scene_filter: operator not allowed: {_quoted(source)}")
            else:
                right = _check(right_node, source)
                if isinstance(op, _ORDERING) and left != right:
                    raise FilterError(f"scene_filter: cannot order {left} against {right}: {ast.unparse(n)!r}")
            left = right
        return NUMBER
    if isinstance(n, ast.BinOp) and type(n.op) in _ARITH:
        if _check(n.left, source) != NUMBER or _check(n.right, source) != NUMBER:
            raise FilterError(f"scene_filter: arithmetic takes numbers, not text ({ast.unparse(n)!r})")
        return NUMBER
    if isinstance(n, ast.Name):
        if n.id not in CATALOG_COLUMNS:
            raise FilterError(f"scene_filter: unknown column {n.id!r}; columns are {', '.join(CATALOG_COLUMNS)}")
        return TEXT if n.id in TEXT_COLUMNS else NUMBER
    if isinstance(n, ast.Constant) and isinstance(n.value, str):
        if len(n.value) > MAX_STRING_CHARS:
            raise FilterError(f"scene_filter: a string of {len(n.value)} characters, at most {MAX_STRING_CHARS}")
        return TEXT
    if isinstance(n, ast.Constant) and isinstance(n.value, (bool, int, float)):
        if isinstance(n.value, int) and not INT64[0] <= n.value <= INT64[1]:
            raise FilterError(f"scene_filter: the integer {str(n.value)[:30]}... does not fit 64 bits")
        return NUMBER
    raise FilterError(f"scene_filter: {ast.unparse(n)[:120]!r} is not allowed in a filter: {_quoted(source)}")


def _is_number(value) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf" or value.size == 0
    return isinstance(value, (bool, int, float, np.number, np.bool_))


def _evaluate(node: ast.expr, catalog: pd.DataFrame, source: str):
    """The filter's value over the catalog (a node checked by _parse)."""

    def ev(n: ast.expr):
        if isinstance(n, ast.BoolOp):
            values = [_as_mask(ev(v), catalog) for v in n.values]
            combine = np.logical_and if isinstance(n.op, ast.And) else np.logical_or
            result = values[0]
            for value in values[1:]:
                result = combine(result, value)
            return result
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not):
            return ~_as_mask(ev(n.operand), catalog)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.UAdd):
            return ev(n.operand)
        if isinstance(n, ast.Compare):
            left, result = ev(n.left), None
            for op, right_node in zip(n.ops, n.comparators):
                if isinstance(op, (ast.In, ast.NotIn)):
                    right = [ev(e) for e in right_node.elts]
                    part = pd.Series(left).isin(right).to_numpy()
                    part = ~part if isinstance(op, ast.NotIn) else part
                else:
                    right = ev(right_node)
                    part = np.asarray(_COMPARE[type(op)](left, right))
                result = part if result is None else (result & part)
                left = right
            return result
        if isinstance(n, ast.BinOp):
            left, right = ev(n.left), ev(n.right)
            if not (_is_number(left) and _is_number(right)):  # a text column typed as a number
                raise FilterError(f"scene_filter: arithmetic takes numbers, not text ({ast.unparse(n)!r})")
            return _ARITH[type(n.op)](left, right)
        if isinstance(n, ast.Name):
            if n.id not in catalog.columns:
                raise FilterError(
                    f"scene_filter: unknown column {n.id!r}; columns are {', '.join(CATALOG_COLUMNS)}"
                )
            return catalog[n.id].to_numpy()
        if isinstance(n, ast.Constant):
            return n.value
        raise FilterError(f"scene_filter: {ast.unparse(n)[:120]!r} is not allowed in a filter: {_quoted(source)}")

    try:
        with np.errstate(all="ignore"):  # x / 0 over a column gives inf or nan, which match nothing
            return _as_mask(ev(node), catalog)
    except FilterError:
        raise
    except TypeError as error:
        raise FilterError(f"scene_filter: types do not match ({error}): {_quoted(source)}") from None
    except ZeroDivisionError:
        raise FilterError(f"scene_filter: division by zero: {_quoted(source)}") from None
    except (ArithmeticError, ValueError, MemoryError, RecursionError) as error:
        raise FilterError(f"scene_filter: cannot be evaluated ({type(error).__name__}: {error}): {_quoted(source)}") from None


def _as_mask(value, catalog: pd.DataFrame) -> np.ndarray:
    if np.ndim(value) == 0:
        return np.full(len(catalog), bool(value))
    return np.asarray(value, dtype=bool)


@dataclass(frozen=True)
class Curation:
    """The scenes a spec selects (catalog rows in time order) and those it asked for but lacks."""

    scenes: pd.DataFrame
    missing_includes: list[str]
    dropped_by_limit: int


def select_scenes(catalog: pd.DataFrame, spec: DatasetSpec) -> Curation:
    """Scenes that pass the filter, plus includes, minus excludes, capped at max_scenes (earliest first).

    Scenes whose log lacks one of the spec's channels are left out.
    """
    if spec.scene_filter.strip():
        mask = _evaluate(_parse(spec.scene_filter), catalog, spec.scene_filter)
    else:
        mask = np.ones(len(catalog), dtype=bool)
    ids = catalog["scene_id"]
    mask |= ids.isin(spec.include_scenes).to_numpy()
    mask &= ~ids.isin(spec.exclude_scenes).to_numpy()
    has_channels = catalog["channels"].map(lambda cs: set(spec.channels) <= set(str(cs).split(",")))
    mask &= has_channels.to_numpy(dtype=bool)
    chosen = catalog[mask].sort_values(["start_time_us", "log_id", "scene_index"])
    dropped = 0
    if spec.max_scenes is not None and len(chosen) > spec.max_scenes:
        dropped = len(chosen) - spec.max_scenes
        chosen = chosen.head(spec.max_scenes)
    missing = sorted(set(spec.include_scenes) - set(ids))
    return Curation(chosen.reset_index(drop=True), missing, dropped)
