"""The comparison's run plan, metrics reading and summary, on hand-written metrics files with hand-computed
figures; and the script end to end on the tiny model."""

import json
from pathlib import Path

import numpy as np
import pytest

from shuffle_r1_jax.experiments.comparison import (
    markdown_table,
    plan_runs,
    read_history,
    reference_accuracy,
    steps_to_reach,
    summarize,
)
from shuffle_r1_jax.experiments.runner import (
    README_END,
    README_START,
    comparison_config,
    comparison_report,
    run_comparison,
    write_readme_block,
)
from tests.train.conftest import tiny_trainer_config


def test_plan_runs_covers_algorithms_seeds_and_ablations_once():
    runs = plan_runs(["grpo", "shuffle_r1"], [0, 1, 2], ["keep_ratio", "abs_rounds"])
    names = sorted({r.name for r in runs})
    assert names == sorted(
        [
            "grpo",
            "shuffle_r1",
            "shuffle_r1 keep_ratio=0.25",
            "shuffle_r1 keep_ratio=0.75",
            "shuffle_r1 abs_rounds=4",
            "shuffle_r1 abs_rounds=16",
        ]
    )
    assert len(runs) == 6 * 3
    assert len({r.dirname for r in runs}) == len(runs)
    ablation = next(r for r in runs if r.name == "shuffle_r1 abs_rounds=16")
    assert dict(ablation.overrides) == {"rl.algorithm": "shuffle_r1", "rl.abs_rounds": 16}
    # without the main Shuffle-R1 run the ablation runs its default value itself
    alone = plan_runs(["grpo"], [0], ["keep_ratio"])
    assert [r.name for r in alone] == [
        "grpo",
        "shuffle_r1 keep_ratio=0.25",
        "shuffle_r1 keep_ratio=0.5",
        "shuffle_r1 keep_ratio=0.75",
    ]
    with pytest.raises(ValueError, match="unknown ablation"):
        plan_runs(["grpo"], [0], ["clip_ratio"])


def _write_metrics(path: Path, accuracy: dict[int, float], steps: int, collapse: float, tries=None, seconds=2.0):
    path.mkdir(parents=True)
    with open(path / "metrics.jsonl", "w") as f:
        for step in range(steps + 1):
            record = {"step": step, "time": 0.0}
            if step > 0:
                record.update(
                    {
                        "advantage/collapse_before": collapse,
                        "advantage/collapse_after": collapse / 2,
                        "utilization/tokens_nonzero_advantage": 1 - collapse,
                        "timing/step": 10.0 if step == 1 else seconds,
                    }
                )
                if tries is not None:
                    record["dapo/tries"] = tries
            if step in accuracy:
                record["val/accuracy"] = accuracy[step]
            f.write(json.dumps(record) + "\n")


def test_read_history_and_summary_match_hand_computed_figures(tmp_path):
    _write_metrics(tmp_path / "g0", {0: 0.3, 2: 0.4, 4: 0.5}, 4, collapse=0.6)
    _write_metrics(tmp_path / "g1", {0: 0.3, 2: 0.5, 4: 0.7}, 4, collapse=0.4)
    _write_metrics(tmp_path / "s0", {0: 0.3, 2: 0.6, 4: 0.8}, 4, collapse=0.2, tries=2.0, seconds=4.0)
    # a resumed run logs step 4 twice: the later record wins
    with open(tmp_path / "s0" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "time": 1.0, "val/accuracy": 0.9}) + "\n")
    grpo = [read_history(tmp_path / d, rollouts_per_batch=64) for d in ("g0", "g1")]
    ours = [read_history(tmp_path / "s0", rollouts_per_batch=64)]
    np.testing.assert_array_equal(ours[0].eval_steps, [0, 2, 4])
    np.testing.assert_allclose(ours[0].accuracy, [0.3, 0.6, 0.9])
    target = reference_accuracy({"grpo": grpo})
    assert target == pytest.approx(0.6)  # (0.5 + 0.7) / 2
    assert steps_to_reach(ours, target) == 2
    assert steps_to_reach(grpo, target) == 4
    assert steps_to_reach(grpo, 0.95) is None

    rows = summarize({"grpo": grpo, "shuffle_r1": ours}, target)
    g, s = rows
    assert g["final"] == pytest.approx((0.6, 0.1)) and g["best"] == pytest.approx((0.6, 0.1))
    assert g["start"] == pytest.approx(0.3)
    assert g["zero_adv_generated"] == pytest.approx(0.5) and g["zero_adv_update"] == pytest.approx(0.25)
    assert g["token_utilization"] == pytest.approx(0.5)
    assert g["rollouts_per_step"] == 64 and s["rollouts_per_step"] == 128
    assert g["seconds_per_step"] == pytest.approx(2.0) and s["seconds_per_step"] == pytest.approx(4.0)
    assert s["final"] == pytest.approx((0.9, 0.0)) and s["steps_to_reference"] == 2
    table = markdown_table(rows)
    assert table.count("\n") == 3 and "| shuffle_r1 | 1 | 0.300 | 0.900 ± 0.000 |" in table


@pytest.mark.slow
def test_a_tiny_comparison_runs_reports_and_resumes(tmp_path, demo_cache):
    config = comparison_config(tiny_trainer_config(demo_cache), steps=2, eval_every=1)
    config.eval.max_prompts = 4
    specs = plan_runs(["grpo", "shuffle_r1"], [0], [])
    assert run_comparison(config, specs, tmp_path) > 0
    results = comparison_report(config, specs, tmp_path, spent=1.0, command="test", machine="test machine")
    assert "| grpo | 1 |" in results and "| shuffle_r1 | 1 |" in results and "test machine" in results
    assert (tmp_path / "curves.png").stat().st_size > 0
    tables = json.loads((tmp_path / "results.json").read_text())
    assert [r["name"] for r in tables["algorithms"]] == ["grpo", "shuffle_r1"]
    assert all(r["steps"] == 2 for r in tables["algorithms"])
    # a second invocation finds the runs finished and only reports
    finished = (tmp_path / "runs" / "grpo" / "seed0" / "metrics.jsonl").read_text()
    assert run_comparison(config, specs, tmp_path) == 0.0
    assert (tmp_path / "runs" / "grpo" / "seed0" / "metrics.jsonl").read_text() == finished


def test_the_readme_block_is_replaced(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold\n{README_END}\nrest\n")
    plot = tmp_path / "curves.png"
    plot.write_bytes(b"png")
    write_readme_block(readme, plot, "new table")
    text = readme.read_text()
    assert "old" not in text and "new table" in text and text.startswith("intro") and text.endswith("rest\n")
    assert (tmp_path / "docs" / "compare_algorithms.png").read_bytes() == b"png"
    readme.write_text("no block")
    with pytest.raises(ValueError, match="no <!-- compare_algorithms:start -->"):
        write_readme_block(readme, plot, "new table")
