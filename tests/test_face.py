"""The package face: ``from workbench import ...`` gives a notebook its configs and verbs, lazily."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import workbench

EAGER = {"AttentionConfig", "DataConfig", "FinetuneConfig", "MaskingConfig", "ProbeConfig", "TrainConfig",
         "WorkbenchError", "__version__"}


def test_all_is_the_eager_names_and_the_lazy_table():
    assert set(workbench.__all__) == EAGER | set(workbench._LAZY)
    assert len(workbench.__all__) == len(set(workbench.__all__))


def test_every_face_name_resolves():
    for name in workbench.__all__:
        assert getattr(workbench, name) is not None, name
    assert set(workbench.__all__) <= set(dir(workbench))


def test_import_is_light():
    code = "import sys, workbench; print(sorted({'torch', 'transformers', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_submodules_keep_their_names():
    # A face name may not shadow a submodule: Python rebinds the package attribute when it loads.
    modules = {m.name for m in pkgutil.iter_modules(workbench.__path__)}
    assert all(attr is None for name, (_, attr) in workbench._LAZY.items() if name in modules)
    from workbench import finetune, finetune_model
    from workbench.evaluation import finetuning

    assert finetuning.__name__ == "workbench.evaluation.finetuning"
    assert finetune is finetune_model is finetuning.finetune and workbench.finetune is finetune
    assert workbench.load_task is finetuning.load_task


def test_unknown_name_is_an_attribute_error():
    try:
        workbench.no_such_verb  # noqa: B018
    except AttributeError as exc:
        assert "no_such_verb" in str(exc)
    else:
        raise AssertionError("workbench.no_such_verb resolved")
