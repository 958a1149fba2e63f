"""The package's rooms import only downward, in this order (lowest first):

    parallel     mesh, logical-axis rules, multi-host start-up, host-to-global arrays
    checkpoint   generic safetensors and orbax I/O, the train-state checkpointer
    models       Qwen2.5-VL: config, layers, vision tower, decoder, HF parameter names, loading and saving
    processing   image preprocessing, prompts and chat template, bucketed prompt batches
    data         dataset readers, record validation, the grain pipeline
    rewards      reward functions, registry, the scoring pool
    sampling     token processors, the jitted prefill + decode sampler
    rl           pure jittable kernels: advantages, PTS, ABS, update-batch selectors, losses, KL
    rollout      one rollout batch: sample, score, DAPO refill; the rollout type the update takes
    learner      log-prob passes, the loss step, the optimizer
    train        orchestration: config resolution, the step's programs, the loop, evaluation, checkpoints
    evaluate     a checkpoint evaluated on a dataset outside training, as the trainer validates
    demo         what only the demo needs: tiny checkpoint and tokenizer, synthetic task and reward, warm-up
    perf         memory planner, step benchmark, compile monitor
    experiments  algorithm comparisons over trainer runs

A module may import its own room and the rooms above it in this list, never one below; so no two rooms can
import each other. Every `import` statement counts, also one inside a function. The only exceptions are the
deprecated import paths in `ALIASES`: modules that re-export a moved module and hold nothing else.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = "shuffle_r1_jax"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE
ORDER = (
    "parallel",
    "checkpoint",
    "models",
    "processing",
    "data",
    "rewards",
    "sampling",
    "rl",
    "rollout",
    "learner",
    "train",
    "evaluate",
    "demo",
    "perf",
    "experiments",
)
ALIASES = {"processing/tiny_tokenizer.py": "demo"}


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, the source of module `module` (relative
    imports resolved against it)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.append((node.lineno, name))
            if room_of(name) is None:  # `from shuffle_r1_jax import train` names the room in the alias
                found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return found


def room_of(module: str) -> str | None:
    """The room of an absolute module name inside the package (None: outside it, or the package itself)."""
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 and parts[1] in ORDER else None


def violations(root: pathlib.Path = ROOT) -> list[str]:
    """Every import of a room from a room above it in `ORDER` (and modules outside any room), as messages."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        module = ".".join((PACKAGE, *relative.with_suffix("").parts)).removesuffix(".__init__")
        if relative.name == "__init__.py":
            module += ".__init__"
        source_room = relative.parts[0] if len(relative.parts) > 1 else None
        if source_room is None:
            continue
        if source_room not in ORDER:
            problems.append(f"{relative}: room {source_room!r} is not in the stated order")
            continue
        allowed = ORDER[: ORDER.index(source_room) + 1]
        for line, name in imported_modules(path.read_text(), module):
            target = room_of(name)
            if target is None or target in allowed:
                continue
            if ALIASES.get(relative.as_posix()) == target:
                continue
            problems.append(f"{relative}:{line} imports {name} ({source_room} may not import {target})")
    return sorted(set(problems))


def test_rooms_import_only_downward():
    problems = violations()
    assert not problems, "imports against the room order:\n" + "\n".join(problems)


def test_every_room_is_in_the_order():
    rooms = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms == set(ORDER)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_only_re_export(alias):
    """A deprecated import path holds a docstring and imports, nothing that could grow logic."""
    tree = ast.parse((ROOT / alias).read_text())
    body = tree.body[1:] if isinstance(tree.body[0], ast.Expr) else tree.body
    assert body and all(isinstance(node, (ast.Import, ast.ImportFrom)) for node in body), alias


def test_an_upward_import_is_caught(tmp_path):
    """The check fails on a lower room importing a higher one, also from inside a function."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "models" / "bad.py").write_text(
        "def f():\n    from shuffle_r1_jax.train.trainer import Trainer\n    return Trainer\n"
    )
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "__init__.py").write_text("from ..models import bad\n")
    assert violations(tmp_path) == [
        "models/bad.py:2 imports shuffle_r1_jax.train.trainer (models may not import train)"
    ]
