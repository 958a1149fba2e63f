"""scripts/gpu_check.py and its mechanics (`perf.budgeted_parts`): a part runs with the checkout importable, a part
past its budget is killed and reported, a part with no time left is skipped, and the report holds each part's
output."""

import importlib.util
import sys
from pathlib import Path

from shuffle_r1_jax.perf import budgeted_parts

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_parts_run_time_out_or_are_skipped_and_are_reported():
    gc = budgeted_parts
    root = SCRIPT.parents[1]
    logged = []
    quick = gc.Part("quick", ("-c", "import shuffle_r1_jax; print('figures')"), 30)
    slow = gc.Part("slow", ("-c", "import time; print('started', flush=True); time.sleep(60)"), 30)
    results = [
        gc.run_part(quick, 30, logged.append, root),
        gc.run_part(slow, 6, logged.append, root),
        gc.run_part(quick, 1, logged.append, root),
    ]
    assert [r.status for r in results] == ["ok", "timed out after 6 s", "skipped (no time left)"]
    assert results[0].stdout.strip() == "figures" and results[1].seconds < 30
    text = gc.report(results, "1 x cpu", smoke=True, command="python scripts/gpu_check.py --cpu-smoke")
    assert "| slow | timed out after 6 s | 6 |" in text and "figures" in text and "started" in text
    assert text.startswith("## GPU check (CPU smoke run: not figures)")


def test_every_part_fits_the_eight_minutes():
    gc = _script()
    assert sum(p.budget_s for p in gc.GPU_PARTS) + gc.RESERVE_S <= 465 < 480
    assert [p.name for p in gc.GPU_PARTS] == [p.name for p in gc.SMOKE_PARTS]
    assert all((SCRIPT.parent.parent / p.args[0]).exists() for p in gc.GPU_PARTS + gc.SMOKE_PARTS)
