"""The import layers, checked on the source: machine ← models ← interp ← analyses ← reports, one way only.

Every ``import`` statement of the four packages counts — at module level, inside functions (lazy
imports) and under ``if TYPE_CHECKING`` — because each is a dependency a reader has to follow. Rules:

1. **No upward import.** A module may import its own package and those below it:
   machine (0) ← models (1) ← interp (2) ← analyses (3) ← reports (4). ``machine`` is the plumbing every
   layer shares (limits, processes, staging folders, scalars, Ray); it knows no model.
2a. **The rooms of models are layers too**: ``models.encoder`` (what the model computes) ←
   ``models.storage`` (its files) ← ``models.train`` (how a run trains) ← the door ``models`` /
   ``models.loading`` (``load_model``, which may train the default model) ← ``models.zoo`` (populations).
   Nothing outside ``models.zoo`` imports the zoo: it is a command, not a library.
2. **Analyses are siblings.** ``analyses.frame`` (what they share) imports no analysis; an analysis
   package (``analyses.<name>``) imports ``analyses.frame`` and itself, never another analysis.
3. **No cycle** between modules (no module imports, directly or through others, its own importer),
   and none between packages (``analyses.<name>`` counts as a package of its own).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("machine", "models", "interp", "analyses", "reports")  # lowest first
SHARED = "analyses.frame"
MODEL_ROOMS = ("models.encoder", "models.storage", "models.train", "models", "models.zoo")  # lowest first


# --- the import graph -----------------------------------------------------------------------------
def project_modules(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every .py file of the layered packages under ``root``."""
    modules = {}
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of the dotted ``name`` that is a project module (None: not ours)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``module`` imports anywhere in its file."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # "from a.b import c" imports module a.b.c when c is one, else a name of a.b
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = project_modules(root)
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def package_of(module: str) -> str:
    """The package a module belongs to for rules 2, 2a and 3: ``analyses.<name>``, a room of ``models``
    (``models.encoder`` ..., or ``models`` for the door at its root) or the top-level package."""
    parts = module.split(".")
    if parts[0] == "analyses" and len(parts) > 1:
        return ".".join(parts[:2])
    if parts[0] == "models" and len(parts) > 1 and ".".join(parts[:2]) in MODEL_ROOMS:
        return ".".join(parts[:2])
    return parts[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(root: Path) -> list[str]:
    """Every broken rule, one line each (empty: the layers hold)."""
    graph = import_graph(root)
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            here, there = module.split(".")[0], target.split(".")[0]
            if LAYERS.index(there) > LAYERS.index(here):
                problems.append(f"upward import: {module} imports {target} ({there} is above {here})")
            source, destination = package_of(module), package_of(target)
            if source in MODEL_ROOMS and destination in MODEL_ROOMS:
                if MODEL_ROOMS.index(destination) > MODEL_ROOMS.index(source):
                    problems.append(
                        f"upward import: {module} imports {target} ({destination} is above {source})"
                    )
            if destination == "models.zoo" and source != "models.zoo":
                problems.append(
                    f"zoo import: {module} imports {target} (only the zoo's command uses the zoo)"
                )
            if (
                source.startswith("analyses.")
                and destination.startswith("analyses.")
                and source != destination
            ):
                if destination != SHARED or source == SHARED:
                    problems.append(f"analysis import: {module} imports {target} (only {SHARED} is shared)")
    problems += [f"module cycle: {' ↔ '.join(c)}" for c in cycles(graph)]
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        mine = package_of(module)
        packages.setdefault(mine, set()).update(package_of(t) for t in targets if package_of(t) != mine)
    problems += [f"package cycle: {' ↔ '.join(c)}" for c in cycles(packages)]
    return problems


# --- the tests ------------------------------------------------------------------------------------
def test_the_layers_hold_and_nothing_imports_its_importer():
    assert violations(ROOT) == []


def test_the_graph_sees_every_package_and_the_real_dependencies():
    graph = import_graph(ROOT)
    assert {m.split(".")[0] for m in graph} == set(LAYERS)
    assert "analyses.frame.command" in graph["analyses.flip_alignment.__main__"]
    assert "analyses.frame.html" in graph["reports.full_report"]  # reports use the lower renderer
    assert "models.storage.checkpoints" in graph["analyses.frame.loading"]  # a lazy import inside a function


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_new_upward_import_or_cycle_is_caught(tmp_path):
    _write(
        tmp_path,
        {
            **{f"{p}/__init__.py": "" for p in LAYERS},
            "machine/limits.py": "from models.encoder import config\n",  # plumbing knows no model
            "models/encoder/__init__.py": "",
            "models/encoder/config.py": "",
            "models/encoder/hooked.py": "from models.train import cli\n",  # the encoder knows no training
            "models/train/__init__.py": "",
            "models/train/cli.py": "",
            "models/zoo/__init__.py": "",
            "models/zoo/plan.py": "from models.train import cli\n",  # downward: fine
            "interp/zoo_reader.py": "from models.zoo import plan\n",  # only the zoo's command uses it
            "models/encoder/cache.py": "def f():\n    from interp import metrics\n",  # lazy, still upward
            "interp/metrics.py": "import models.encoder.cache\n",
            "analyses/frame/__init__.py": "",
            "analyses/frame/files.py": "from analyses.one.result import X\n",  # frame knows an analysis
            "analyses/one/__init__.py": "",
            "analyses/one/result.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from analyses.one.verdict import V\n",
            "analyses/one/verdict.py": "from .result import R\nfrom analyses.two import run\n",
            "analyses/two/__init__.py": "def run():\n    pass\n",
            "reports/build.py": "from analyses.one import result\n",  # downward: fine
        },
    )
    found = violations(tmp_path)
    assert "upward import: models.encoder.cache imports interp.metrics (interp is above models)" in found
    assert "module cycle: interp.metrics ↔ models.encoder.cache" in found
    assert "module cycle: analyses.one.result ↔ analyses.one.verdict" in found  # through TYPE_CHECKING
    assert (
        "analysis import: analyses.frame.files imports analyses.one.result (only analyses.frame is shared)"
        in found
    )
    assert (
        "analysis import: analyses.one.verdict imports analyses.two (only analyses.frame is shared)" in found
    )
    assert "package cycle: interp ↔ models.encoder" in found
    assert "upward import: machine.limits imports models.encoder.config (models is above machine)" in found
    assert (
        "upward import: models.encoder.hooked imports models.train.cli (models.train is above models.encoder)"
        in found
    )
    assert (
        "zoo import: interp.zoo_reader imports models.zoo.plan (only the zoo's command uses the zoo)" in found
    )
    assert not any(
        line.startswith(("upward import: models.train.cli", "upward import: models.zoo")) for line in found
    )
    assert not any("reports.build" in line for line in found)


def test_the_documented_doors_import():
    """``from models import ...`` and the rooms' public names keep working after the move into rooms."""
    import importlib

    import models
    import models.encoder

    for name in ("load_model", "HookedReverseEncoder", "EncoderConfig", "save_model", "CheckpointError"):
        assert getattr(models, name) is not None
    assert models.encoder.HookedReverseEncoder is models.HookedReverseEncoder
    assert models.encoder.EncoderConfig is models.EncoderConfig
    for room in ("models.encoder", "models.storage", "models.train", "models.zoo", "machine"):
        assert importlib.import_module(room).__doc__, f"{room} says what lives in it"
    assert (ROOT / "models/train/__main__.py").is_file() and (ROOT / "models/zoo/__main__.py").is_file()
