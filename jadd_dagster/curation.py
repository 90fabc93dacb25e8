"""Selecting scenes from the catalog by a dataset spec's filters.

Filters are parsed with `ast` and evaluated over catalog columns by our own small interpreter:
only column names, constants, comparisons, boolean and arithmetic operators and `in [...]` lists
are accepted, so a filter can never run code.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jadd_dagster.scenes import CATALOG_COLUMNS, empty_catalog
from jadd_dagster.spec import DatasetSpec

_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class FilterError(ValueError):
    """A scene filter that is not a valid expression over catalog columns."""


def check_filter(expression: str) -> None:
    """Raise FilterError if the expression would not evaluate over the catalog."""
    if expression.strip():
        _evaluate(_parse(expression), empty_catalog(), expression)


def _parse(expression: str) -> ast.expr:
    try:
        return ast.parse(expression.strip(), mode="eval").body
    except SyntaxError as error:
        raise FilterError(f"scene_filter: not a valid expression ({error.msg}): {expression!r}") from None


def _evaluate(node: ast.expr, catalog: pd.DataFrame, source: str):
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
        if isinstance(n, ast.Compare):
            left, result = ev(n.left), None
            for op, right_node in zip(n.ops, n.comparators):
                if isinstance(op, (ast.In, ast.NotIn)):
                    if not isinstance(right_node, (ast.List, ast.Tuple, ast.Set)):
                        raise FilterError(f"scene_filter: 'in' needs a list, e.g. x in ['a', 'b']: {source!r}")
                    right = [ev(e) for e in right_node.elts]
                    part = pd.Series(left).isin(right).to_numpy()
                    part = ~part if isinstance(op, ast.NotIn) else part
                else:
                    if type(op) not in _COMPARE:
                        raise FilterError(f"scene_filter: operator not allowed: {source!r}")
                    right = ev(right_node)
                    part = np.asarray(_COMPARE[type(op)](left, right))
                result = part if result is None else (result & part)
                left = right
            return result
        if isinstance(n, ast.BinOp) and type(n.op) in _ARITH:
            return _ARITH[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.Name):
            if n.id not in catalog.columns:
                raise FilterError(
                    f"scene_filter: unknown column {n.id!r}; columns are {', '.join(CATALOG_COLUMNS)}"
                )
            return catalog[n.id].to_numpy()
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float, str, bool)):
            return n.value
        raise FilterError(f"scene_filter: {ast.unparse(n)!r} is not allowed in a filter: {source!r}")

    try:
        return ev(node)
    except TypeError as error:
        raise FilterError(f"scene_filter: types do not match ({error}): {source!r}") from None


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
        mask = _as_mask(_evaluate(_parse(spec.scene_filter), catalog, spec.scene_filter), catalog)
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
