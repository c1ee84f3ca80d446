"""Check notebook parameters with the config dataclasses the notebook builds from them.

A notebook turns its parameters into configs, e.g. ``MaskingConfig(mask_rate=mask_rate)``; those
calls are read from its code cells, so ``-p mask_rate=5`` is refused by ``MaskingConfig``'s own
``__post_init__`` before any kernel starts, not minutes later inside the notebook.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import config as config_module
from ..errors import WorkbenchError

__all__ = ["Binding", "check_configs", "config_bindings"]


@dataclass(frozen=True)
class Binding:
    """One ``XConfig(field=param, field=constant, ...)`` call of a notebook."""

    cls: type
    params: dict[str, str]  # field -> the parameter passed to it by name
    constants: dict[str, Any]  # field -> a literal passed to it


def _config_class(func: ast.expr) -> type | None:
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    cls = getattr(config_module, name, None) if name in config_module.__all__ else None
    return cls if isinstance(cls, type) and dataclasses.is_dataclass(cls) else None


def _binding(call: ast.Call) -> Binding | None:
    cls = _config_class(call.func)
    if cls is None:
        return None
    fields = {f.name for f in dataclasses.fields(cls)}
    params, constants = {}, {}
    for kw in call.keywords:
        if kw.arg is None or kw.arg not in fields:  # **kwargs, or a typo the notebook itself will hit
            continue
        if isinstance(kw.value, ast.Name):
            params[kw.arg] = kw.value.id
        else:
            try:
                constants[kw.arg] = ast.literal_eval(kw.value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue  # an expression: its value is only known when the notebook runs
    return Binding(cls, params, constants)


def config_bindings(nb: Any) -> list[Binding]:
    """Every config dataclass call in the notebook's code cells, in order."""
    from IPython.core.inputtransformer2 import TransformerManager

    found = []
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        try:
            tree = ast.parse(TransformerManager().transform_cell(cell.source))
        except SyntaxError:
            continue  # the notebook reports its own syntax errors
        found += [b for node in ast.walk(tree) if isinstance(node, ast.Call) and (b := _binding(node))]
    return found


def check_configs(notebook: str, bindings: list[Binding], values: Mapping[str, Any], user_set: set[str]) -> None:
    """Build each config that a parameter the user set flows into; its validation error is ours, in one line."""
    for b in bindings:
        mine = sorted(p for p in b.params.values() if p in user_set)
        if not mine:
            continue  # the notebook's own defaults are its business
        kwargs = b.constants | {f: values[p] for f, p in b.params.items() if p in values}
        try:
            b.cls(**kwargs)
        except WorkbenchError as exc:
            raise WorkbenchError(f"{exc} ({b.cls.__name__} of {notebook}, from {', '.join(mine)}; nothing ran)") from None
        except (TypeError, ValueError) as exc:
            shown = ", ".join(f"{p}={values[p]!r}" for p in mine)
            raise WorkbenchError(f"{shown} is not accepted by {b.cls.__name__} of {notebook} ({exc}); nothing ran") from None
