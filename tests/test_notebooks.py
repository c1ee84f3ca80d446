"""The notebook sequence: thin, one flat parameters cell whose names map onto config fields, no outputs.

Executing the notebooks is nbval's job (`pytest --nbval-lax notebooks/`, part of `make test`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.config import (
    AttentionConfig,
    DataConfig,
    FinetuneConfig,
    MaskingConfig,
    ProbeConfig,
    TrainConfig,
    config_fields,
)
from workbench.report import notebook_parameters

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# Each notebook's parameters map onto these dataclasses' fields, by the same name.
CONFIGS = {
    "01_data_inspection": (DataConfig, MaskingConfig),
    "02_pretraining": (DataConfig, MaskingConfig, TrainConfig),
    "03_attention": (AttentionConfig,),
    "04_finetuning": (FinetuneConfig, ProbeConfig),
}


def test_the_sequence_is_complete():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(CONFIGS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parameters_cell_is_flat_and_maps_onto_config_fields(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = json.loads(path.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters`"
    params = notebook_parameters(path)
    assert params
    fields = {f: cls for cls in CONFIGS[name] for f in config_fields(cls)}
    for pname, param in params.items():
        assert param.type in (str, int, float, bool), f"{pname} is not a flat scalar"
        field = pname
        assert field in fields, f"{name}: parameter {pname} is no field of {[c.__name__ for c in CONFIGS[name]]}"
        # The default builds a valid config on its own.
        fields[field](**{field: param.default})


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_committed_without_outputs_and_thin(name):
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    # Thin: short cells calling workbench, with markdown telling the story.
    assert all(len("".join(c["source"]).splitlines()) <= 25 for c in code)
    assert sum(c["cell_type"] == "markdown" for c in nb["cells"]) >= len(code) // 2


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_notebooks_import_only_the_package_face(name):
    import ast

    import workbench

    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    source = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    tree = ast.parse(source)
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    wb = [n for n in imports if isinstance(n, ast.Import) and n.names[0].name == "workbench"]
    assert len(wb) == 1 and wb[0].names[0].asname == "wb", "one `import workbench as wb`"
    assert not [n for n in imports if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("workbench")]
    used = {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "wb"}
    assert used <= set(workbench.__all__), f"not on the face: {sorted(used - set(workbench.__all__))}"
