"""Notebook parameters: what each notebook's ``parameters`` cell declares, and the user's values checked against it.

Plain papermill injects a misspelt name silently, so every value is checked here before anything
runs: the name must be declared, the value must have the type of the notebook's default, and the
config dataclasses the notebook builds from it (``workbench/config.py``) must accept it.
"""

from __future__ import annotations

import ast
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WorkbenchError, special_kind
from .configcheck import check_configs, config_bindings

__all__ = [
    "NotebookParam",
    "Plan",
    "coerce",
    "defaults",
    "find_notebooks",
    "first_line",
    "injected",
    "load_params_file",
    "notebook_parameters",
    "parse_assignments",
    "plan",
]

_SCALARS = (str, int, float, bool)
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
# Set by the runner: the notebook that trains (declares `out`, not `model`: 02) writes its checkpoint
# into the run dir, and later notebooks that declare `model` (03, 04) read it.
OUT, MODEL = "out", "model"
# Set by the runner too: True for the training notebook of a run that continues an interrupted
# attempt's checkpoints (copied into its own run dir), when the notebook declares it (02 does).
RESUME = "resume"


@dataclass(frozen=True)
class NotebookParam:
    """A parameter of a notebook's ``parameters`` cell: its literal default and that default's type."""

    name: str
    default: Any
    type: type | None  # None: the default is not a str/int/float/bool literal, so any value goes


def first_line(text: Any, limit: int = 200) -> str:
    """The first line of ``text``, cut to ``limit`` characters."""
    line = (str(text).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def find_notebooks(notebooks_dir: str | Path, select: Sequence[str] | None = None) -> list[Path]:
    """The ``NN_*.ipynb`` notebooks of ``notebooks_dir`` in order, or the ones ``select`` names."""
    root = Path(notebooks_dir)
    found = sorted(p for p in root.glob("[0-9][0-9]_*.ipynb") if p.is_file())
    if not found:
        raise WorkbenchError(f"no NN_name.ipynb notebooks in {root}; pass --notebooks-dir DIR")
    if not select:
        return found
    chosen = []
    for want in select:
        key = want.strip().removesuffix(".ipynb")
        hits = [p for p in found if p.stem == key or p.stem[:2] == key.zfill(2)]
        if not hits:
            names = ", ".join(p.stem[:2] for p in found)
            raise WorkbenchError(f"no notebook {want!r} in {root}; choose from {names} (e.g. --notebooks 01,03)")
        chosen += [p for p in hits if p not in chosen]
    return sorted(chosen)


def _read(path: str | Path) -> Any:
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:
        raise WorkbenchError(f"cannot read notebook {path} ({type(exc).__name__}: {first_line(exc)}); fix or remove it") from None


def _parameters_source(nb: Any) -> str | None:
    from IPython.core.inputtransformer2 import TransformerManager

    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    return None if cell is None else TransformerManager().transform_cell(cell.source)  # magics -> Python


def notebook_parameters(path: str | Path) -> dict[str, NotebookParam]:
    """The parameters a notebook declares: each top-level ``name = value`` of its parameters cell."""
    return _declared(_read(path), path)


def _declared(nb: Any, path: str | Path) -> dict[str, NotebookParam]:
    source = _parameters_source(nb)
    if source is None:
        return {}
    # Not papermill.inspect_notebook: it skips any line with two `=`, comments included
    # (papermill#772, #864), e.g. 01's `max_documents = 0  # (0 = all)`; ast reads it right.
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise WorkbenchError(f"the parameters cell of {path} is not valid Python (line {exc.lineno}: {exc.msg}); fix it") from None
    params = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        try:
            default = ast.literal_eval(node.value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            default = ast.get_source_segment(source, node.value)  # an expression: no type to check
        tp = type(default) if isinstance(default, _SCALARS) else None
        params.update({t.id: NotebookParam(t.id, default, tp) for t in targets if isinstance(t, ast.Name)})
    return params


def load_params_file(path: str | Path) -> dict[str, Any]:
    """A flat ``name: value`` YAML mapping of notebook parameters."""
    import yaml

    kind = special_kind(path)
    if kind is not None:  # reading a FIFO would wait for a writer
        raise WorkbenchError(f"parameters file {path} is {kind}, not a file; pass a YAML file to --params")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkbenchError(f"cannot read parameters file {path} ({exc.strerror}); pass an existing YAML file to --params") from None
    except UnicodeDecodeError as exc:
        raise WorkbenchError(f"parameters file {path} is not valid UTF-8 (byte offset {exc.start}); "
                             "re-save it as UTF-8") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise WorkbenchError(f"parameters file {path} is not valid YAML ({first}); write one `name: value` per line") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or any(not isinstance(k, str) for k in data):
        raise WorkbenchError(f"parameters file {path} must be a flat mapping of `name: value` lines")
    nested = [k for k, v in data.items() if v is not None and not isinstance(v, _SCALARS)]
    if nested:
        raise WorkbenchError(f"parameters file {path}: {', '.join(nested)} must be single values (str, number or bool), not lists or mappings")
    return data


def parse_assignments(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    """``NAME=VALUE`` flags as a dict (a later flag of the same name wins)."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise WorkbenchError(f"{flag} {item!r} is not NAME=VALUE; e.g. {flag} mask_rate=0.3")
        out[name.strip()] = value
    return out


def _as_bool(name: str, value: Any, default: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise WorkbenchError(f"{name}={value!r} is not a boolean (default {default!r}); pass {name}=true or {name}=false")


def coerce(name: str, value: Any, param: NotebookParam) -> Any:
    """``value`` (a flag's string or a YAML scalar) as the type of the notebook's default."""
    tp, default = param.type, param.default
    if value is not None and not isinstance(value, _SCALARS):
        raise WorkbenchError(f"{name}={value!r} is not a single value; notebook parameters are str, int, float or bool")
    if tp is None:
        return value
    if tp is bool:
        return _as_bool(name, value, default)
    text = value.strip() if isinstance(value, str) else None
    if tp is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if text is not None:
            with contextlib.suppress(ValueError):
                return int(text)
        raise WorkbenchError(f"{name}={value!r} is not an integer (default {default!r}); pass a whole number, e.g. {name}={default}")
    if tp is float and not isinstance(value, bool):
        if isinstance(value, int | float):
            return float(value)
        if text is not None:
            with contextlib.suppress(ValueError):
                return float(text)
        raise WorkbenchError(f"{name}={value!r} is not a number (default {default!r}); pass e.g. {name}={default}")
    if tp is str and value is not None and not isinstance(value, bool):
        return str(value)  # a YAML number for a text parameter, e.g. a hub revision
    raise WorkbenchError(f"{name}={value!r} is not a {tp.__name__} (default {default!r}); pass e.g. {name}={default!r}")


def _absolute(value: Any) -> Any:
    # Kernels run in the notebooks dir: a relative path the user typed means one from their cwd.
    if isinstance(value, str) and value and not os.path.isabs(value) and Path(value).exists():
        return str(Path(value).resolve())
    return value


@dataclass
class Plan:
    """What a report will run: checked before anything starts."""

    notebooks_dir: Path
    paths: list[Path]
    params: dict[str, Any]  # the user's values, coerced
    per_notebook: list[dict[str, Any]]  # of those, the ones each notebook declares
    producer: int | None  # the notebook that writes the checkpoint (declares out, not model)
    consumers: list[int]  # later notebooks that get the checkpoint as `model`
    declared: list[dict[str, NotebookParam]]


def plan(params: Mapping[str, Any], notebooks_dir: str | Path, select: Sequence[str] | None) -> Plan:
    """Check ``params`` against the notebooks' parameters cells and config dataclasses; nothing runs."""
    paths = find_notebooks(notebooks_dir, select)
    notebooks = [_read(p) for p in paths]
    declared = [_declared(nb, p) for nb, p in zip(notebooks, paths, strict=True)]
    # A notebook that takes `model` reads a checkpoint; the first that declares `out` without it makes one.
    producer = next((i for i, d in enumerate(declared) if OUT in d and MODEL not in d), None)
    # `out` stays the user's for the other notebooks that declare it (04's results dir).
    runner_only = {OUT} if producer is not None and not any(OUT in d for i, d in enumerate(declared) if i != producer) else set()
    if runner_only & set(params):
        raise WorkbenchError(f"out is set by the report runner for {paths[producer].stem} (<run dir>/checkpoint); drop -p out")
    valid = sorted({n for d in declared for n in d} - runner_only)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise WorkbenchError(
            f"unknown parameter(s) {', '.join(unknown)}: not in the parameters cell of "
            f"{', '.join(p.stem for p in paths)}; valid names: {', '.join(valid) or '(none)'}"
        )
    per_notebook = [{k: _absolute(coerce(k, v, d[k])) for k, v in params.items() if k in d and not (i == producer and k == OUT)}
                    for i, d in enumerate(declared)]
    merged: dict[str, Any] = {}
    for values in per_notebook:
        merged.update({k: v for k, v in values.items() if k not in merged})
    consumers = [] if producer is None or MODEL in params else [
        i for i, d in enumerate(declared) if i > producer and MODEL in d
    ]
    result = Plan(Path(notebooks_dir).resolve(), paths, merged, per_notebook, producer, consumers, declared)
    for i, (path, nb) in enumerate(zip(paths, notebooks, strict=True)):
        values = {k: d.default for k, d in declared[i].items() if d.type is not None}
        values.update(injected(result, i, "<run dir>/checkpoint"))
        check_configs(path.stem, config_bindings(nb), values, set(per_notebook[i]))
    return result


def defaults(p: Plan) -> dict[str, Any]:
    """The notebooks' own values of their literal parameters (the first notebook's where two declare one), but ``out``/``model``."""
    found: dict[str, Any] = {}
    for declared in p.declared:
        found.update({k: d.default for k, d in declared.items() if d.type is not None and k not in (OUT, MODEL)
                      and k not in found})
    return found


def injected(p: Plan, i: int, checkpoint: str, resume: bool = False) -> dict[str, Any]:
    """What papermill injects into notebook ``i``: the user's values it declares and the runner's paths.

    ``resume``: the run dir's checkpoint folder holds an interrupted attempt's checkpoints to continue.
    """
    values = dict(p.per_notebook[i])
    if i == p.producer:
        values[OUT] = checkpoint
        if resume and RESUME in p.declared[i]:
            values[RESUME] = True
    if i in p.consumers:
        values[MODEL] = checkpoint
    return values
