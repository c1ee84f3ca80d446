"""Set-up stays true: environment.yml matches pyproject.toml, and CI runs the README's test command."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _normalise(req: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_normalise(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert {_normalise(r) for r in pip_section} == wanted
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    low = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, low.split(".")))



def _duplicates(requirements: list[str]) -> list[str]:
    names = [_normalise(r)[0] for r in requirements]
    return sorted({n for n in names if names.count(n) > 1})


def test_every_dependency_is_declared_once():
    # A set comparison above cannot see a package pinned twice (scipy once was, with two specs).
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _duplicates(["scipy>=1.10", "numpy", "SciPy >=1.11"]) == ["scipy"]
    assert _duplicates(project["dependencies"] + project["optional-dependencies"]["dev"]) == []
    assert _duplicates(pip_section) == []

def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme and "make demo" in readme
    assert re.search(r"^make test$", ci, re.M)


def test_makefile_installs_cpu_torch_without_replacing_an_existing_one():
    makefile = (REPO / "Makefile").read_text()
    assert "TORCH_SPEC ?= torch==" in makefile
    # An existing (e.g. CUDA) torch is kept: the CPU spec is installed only when none imports.
    assert 'python -c "import torch" 2>/dev/null ||' in makefile


def _imported_modules(source: str) -> set[str]:
    """Top-level names of every absolute import in ``source`` (inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _code_imports() -> dict[str, set[str]]:
    """module -> the files of workbench/ and notebooks/ that import it."""
    found: dict[str, set[str]] = {}
    sources = [(p, p.read_text()) for p in sorted((REPO / "workbench").rglob("*.py"))]
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "code":  # IPython magics and shell lines are not Python
                lines = "".join(cell["source"]).splitlines()
                sources.append((nb, "\n".join(x for x in lines if not x.lstrip().startswith(("%", "!")))))
    for path, source in sources:
        for name in _imported_modules(source):
            found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def _dist(requirement: str) -> str:
    return _normalise(requirement)[0]


def test_every_import_is_a_declared_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = {k: v for k, v in project["optional-dependencies"].items() if k != "dev"}  # dev: not for the package
    declared = {_dist(r) for r in project["dependencies"]} | {_dist(r) for reqs in extras.values() for r in reqs}
    providers = importlib.metadata.packages_distributions()  # module -> installed distributions
    undeclared = {}
    for module, files in _code_imports().items():
        if module in sys.stdlib_module_names or module in ("workbench", "__future__"):
            continue
        # An optional extra that is not installed here has no distribution to look up: its module
        # name must then be the declared name itself (mlflow, wandb).
        dists = {_dist(d) for d in providers.get(module, [module])}
        if not dists & declared:
            undeclared[module] = (sorted(dists), sorted(files))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_import_check_catches_an_undeclared_module():
    # the walk sees imports inside functions and from-imports, and skips relative ones
    assert _imported_modules("import a.b\nfrom c.d import e\nfrom . import f\ndef g():\n    import h\n") == {"a", "c", "h"}
    assert "scipy" in _code_imports() and "workbench/analysis/attention.py" in _code_imports()["scipy"]


# ------------------------------------------------------------------ chromium for `make test`
def _fake_bin(tmp_path: Path, uid: int, sudo: str | None, apt: bool = True) -> Path:
    """A PATH of fakes: `id -u` says ``uid``; apt-get logs its arguments and installs a chromium."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    scripts = {"id": f'#!/bin/sh\necho {uid}\n'}
    if apt:
        scripts["apt-get"] = (f'#!/bin/sh\necho "apt-get $*" >> {log}\n'
                              f'if [ "$1" = install ]; then printf "#!/bin/sh\\n" > {bin_dir}/chromium; '
                              f'/bin/chmod +x {bin_dir}/chromium; fi\n')
    if sudo == "passwordless":  # `sudo -n true` succeeds; `sudo CMD` runs CMD
        scripts["sudo"] = f'#!/bin/sh\n[ "$1" = -n ] && exit 0\necho "sudo $1" >> {log}\nexec "$@"\n'
    elif sudo == "password":  # `sudo -n` fails: it would have to ask
        scripts["sudo"] = '#!/bin/sh\nexit 1\n'
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _ensure(bin_dir: Path) -> subprocess.CompletedProcess:
    # stdin is not a terminal here, as in CI; PATH holds only the fakes, so no chromium is found
    return subprocess.run(["/bin/bash", str(REPO / ".ci" / "ensure-chromium")], env={"PATH": str(bin_dir)},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("uid, sudo, via", [(0, None, ""), (1000, "passwordless", "sudo apt-get\n")])
def test_ensure_chromium_installs_it_as_root_or_with_sudo(tmp_path, uid, sudo, via):
    bin_dir = _fake_bin(tmp_path, uid, sudo)
    done = _ensure(bin_dir)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "log").read_text()
    assert "apt-get update\n" in log and "apt-get install -y chromium\n" in log
    assert log.count("sudo apt-get") == (2 if sudo else 0)
    assert _ensure(bin_dir).returncode == 0 and (tmp_path / "log").read_text() == log  # present: nothing to do


@pytest.mark.parametrize("sudo", [None, "password"])
def test_ensure_chromium_stops_at_once_with_the_command_when_it_cannot_install(tmp_path, sudo):
    done = _ensure(_fake_bin(tmp_path, 1000, sudo))
    assert done.returncode == 1 and not (tmp_path / "log").exists()
    assert done.stderr.count("\n") == 1 and "sudo apt-get install -y chromium" in done.stderr


def test_ensure_chromium_without_apt_get_names_the_problem(tmp_path):
    done = _ensure(_fake_bin(tmp_path, 0, None, apt=False))
    assert done.returncode == 1 and "there is no apt-get" in done.stderr


def test_make_test_ensures_chromium_first_and_ci_only_runs_make_test():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test: chromium slurm venv$", makefile, re.M)
    assert re.search(r"^chromium:\n\t@bash \.ci/ensure-chromium$", makefile, re.M)
    assert re.search(r"^slurm:\n\t@bash \.ci/ensure-slurm$", makefile, re.M)
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "make test" and not any("apt-get" in line or "chromium" in line for line in ci)
    # Under `make test` this runs as a sub-make: drop the parent's MAKEFLAGS/MAKELEVEL so it
    # prints no "Entering directory" line and reads the Makefile as CI's top-level make does.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}}
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "test"],
        cwd=REPO, capture_output=True, text=True, timeout=60, env=env,
    )
    assert dry.stdout.splitlines()[0] == "bash .ci/ensure-chromium", dry.stdout


# ------------------------------------------------------------------ SLURM for `make test`
SLURM_COMMANDS = ("slurmctld", "slurmd", "sbatch", "munged")


def _ensure_slurm(tmp_path: Path, uid: int) -> tuple[subprocess.CompletedProcess, Path]:
    """.ci/ensure-slurm with a PATH of fakes: `id -u` says ``uid``; apt-get logs and installs the four commands."""
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir(parents=True, exist_ok=True)
    installs = "; ".join(f'printf "#!/bin/sh\\n" > {bin_dir}/{c}; /bin/chmod +x {bin_dir}/{c}' for c in SLURM_COMMANDS)
    for name, text in {"id": f"#!/bin/sh\necho {uid}\n",
                       "apt-get": f'#!/bin/sh\necho "apt-get $*" >> {log}\nif [ "$1" = install ]; then {installs}; fi\n'}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    done = subprocess.run(["/bin/bash", str(REPO / ".ci" / "ensure-slurm")], env={"PATH": str(bin_dir)},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    return done, log


def test_ensure_slurm_installs_debians_packages_as_root_and_only_notes_it_otherwise(tmp_path):
    done, log = _ensure_slurm(tmp_path / "root", 0)
    assert done.returncode == 0, done.stderr
    assert log.read_text() == "apt-get update\napt-get install -y slurmctld slurmd slurm-client munge\n"
    assert _ensure_slurm(tmp_path / "root", 0)[0].returncode == 0 and log.read_text().count("install") == 1  # present
    done, log = _ensure_slurm(tmp_path / "user", 1000)  # no sudo: the SLURM tests skip, make test goes on
    assert done.returncode == 0 and not log.exists()
    assert done.stderr.count("\n") == 1 and "tests will skip. As root: apt-get install -y slurmctld" in done.stderr
