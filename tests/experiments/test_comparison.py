"""The comparison's run plan, metrics reading and summary, on hand-written metrics files with hand-computed
figures; and the script end to end on the tiny model."""

import json
from pathlib import Path

import numpy as np
import pytest

from shuffle_r1_jax.experiments.comparison import (
    area_under_curve,
    markdown_table,
    paired_difference,
    parse_run,
    plan_runs,
    plan_tables,
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


def test_plan_tables_and_runs_cover_protocols_ablations_and_seeds_once():
    tables = plan_tables(["paper", "equal_rollouts"], ["grpo", "shuffle_r1"], ["keep_ratio", "abs_sampling"])
    assert list(tables) == ["paper", "equal_rollouts", "keep_ratio", "abs_sampling"]
    # the headline: the paper's protocol, the same update rows per optimizer step
    assert dict(tables["paper"]["grpo n=8"]) == {"rl.algorithm": "grpo", "rollout.n": 8}
    assert dict(tables["paper"]["dapo n=8"]) == {"rl.algorithm": "dapo", "rollout.n": 8}
    assert dict(tables["paper"]["shuffle_r1 n=16"]) == {
        "rl.algorithm": "shuffle_r1",
        "rollout.n": 16,
        "rl.keep_ratio": 0.5,
    }
    assert list(tables["equal_rollouts"]) == ["grpo n=8", "shuffle_r1 n=8"]
    assert dict(tables["equal_rollouts"]["shuffle_r1 n=8"]) == {"rl.algorithm": "shuffle_r1", "rollout.n": 8}
    # ablations vary one key of the headline Shuffle-R1 run; the default value is that run itself
    assert list(tables["keep_ratio"]) == [
        "shuffle_r1 n=16 keep_ratio=0.25",
        "shuffle_r1 n=16",
        "shuffle_r1 n=16 keep_ratio=0.75",
    ]
    assert dict(tables["abs_sampling"]["shuffle_r1 n=16 abs_sampling=static"]) == {
        "rl.algorithm": "shuffle_r1",
        "rollout.n": 16,
        "rl.keep_ratio": 0.5,
        "rl.abs_sampling": "static",
    }
    runs = plan_runs(tables, {table: [0, 1] for table in tables})
    names = [r.name for r in runs]
    # grpo n=8 and shuffle_r1 n=16 appear in several tables but run once per seed
    assert names.count("grpo n=8") == 2 and names.count("shuffle_r1 n=16") == 2
    assert len(runs) == 2 * len({n for t in tables.values() for n in t})
    assert len({r.dirname for r in runs}) == len(runs)
    assert [r.seed for r in runs] == sorted(r.seed for r in runs)  # seed by seed
    # ablations on fewer seeds: the headline run keeps the paper table's seeds, the variants run seed 0 only
    fewer = plan_runs(tables, {"paper": [0, 1], "equal_rollouts": [0, 1], "keep_ratio": [0], "abs_sampling": [0]})
    assert [r.seed for r in fewer if r.name == "shuffle_r1 n=16"] == [0, 1]
    assert [r.seed for r in fewer if r.name == "shuffle_r1 n=16 abs_rounds=4"] == []
    assert [r.seed for r in fewer if r.name == "shuffle_r1 n=16 keep_ratio=0.25"] == [0]
    with pytest.raises(ValueError, match="table 'keep_ratio' has no seeds"):
        plan_runs(tables, {"paper": [0], "equal_rollouts": [0], "abs_sampling": [0]})
    assert next(r for r in runs if r.name == "shuffle_r1 n=16 keep_ratio=0.25" and r.seed == 1).dirname == (
        "shuffle_r1_n-16_keep_ratio-0.25/seed1"
    )
    with pytest.raises(ValueError, match="unknown table"):
        plan_tables(["paper"], [], ["clip_ratio"])
    with pytest.raises(ValueError, match="two sets of overrides"):
        plan_runs({"a": {"x": (("rollout.n", 8),)}, "b": {"x": (("rollout.n", 16),)}}, {"a": [0], "b": [0]})


def test_parse_run():
    name, overrides = parse_run("shuffle_r1 p=2: rl.algorithm=shuffle_r1, rollout.n=16,rl.abs_power=2.0")
    assert name == "shuffle_r1 p=2"
    assert overrides == (("rl.algorithm", "shuffle_r1"), ("rollout.n", 16), ("rl.abs_power", 2.0))
    extra = plan_tables(["paper"], [], [], dict([parse_run("mine:rollout.n=4")]))
    assert list(extra["paper"]) == ["grpo n=8", "dapo n=8", "shuffle_r1 n=16", "mine"]
    for bad in ("no-overrides", ":rollout.n=4", "x:rollout.n"):
        with pytest.raises(ValueError, match="expected NAME:key=value"):
            parse_run(bad)


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
                        "rollout/zero_advantage_groups": collapse + 0.01 * step,
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
    _write_metrics(tmp_path / "s1", {0: 0.3, 2: 0.4, 4: 0.6}, 4, collapse=0.2, seconds=4.0)
    # a resumed run logs step 4 twice: the later record wins
    with open(tmp_path / "s0" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "time": 1.0, "val/accuracy": 0.9}) + "\n")
    grpo = [read_history(tmp_path / f"g{seed}", 64, 64, seed) for seed in (0, 1)]
    ours = [read_history(tmp_path / f"s{seed}", 128, 64, seed) for seed in (0, 1)]
    np.testing.assert_array_equal(ours[0].eval_steps, [0, 2, 4])
    np.testing.assert_allclose(ours[0].accuracy, [0.3, 0.6, 0.9])
    assert ours[0].wall_seconds == 1.0 and grpo[0].wall_seconds == 0.0  # first to last record's time
    target = reference_accuracy({"grpo n=8": grpo})
    assert target == pytest.approx(0.6)  # (0.5 + 0.7) / 2
    assert steps_to_reach(ours, target) == 4  # seed means 0.3, 0.5, 0.75
    assert steps_to_reach(grpo, target) == 4
    assert steps_to_reach(grpo, 0.95) is None
    # trapezoids over steps 0-4, divided by 4: (0.3 + 0.6) / 2 * 2 + (0.6 + 0.9) / 2 * 2 = 2.4 -> 0.6
    assert area_under_curve(ours[0]) == pytest.approx(0.6)
    assert area_under_curve(grpo[0]) == pytest.approx(0.4)  # (0.35 * 2 + 0.45 * 2) / 4

    rows = summarize({"grpo n=8": grpo, "shuffle_r1 n=16": ours}, target)
    g, s = rows
    assert g["final"] == pytest.approx((0.6, 0.1)) and g["best"] == pytest.approx((0.6, 0.1))
    assert g["start"] == pytest.approx(0.3)
    assert g["zero_adv_generated"] == pytest.approx(0.5) and g["zero_adv_update"] == pytest.approx(0.25)
    assert g["token_utilization"] == pytest.approx(0.5)
    # each seed's mean over steps 1-4 of collapse + 0.01 step: 0.625 and 0.425
    assert g["zero_adv_groups_by_seed"] == pytest.approx({0: 0.625, 1: 0.425})
    assert g["zero_adv_groups"] == pytest.approx((0.525, 0.1))
    assert g["final_vs_reference"] is None and g["auc_vs_reference"] is None
    assert g["rollouts_per_step"] == 64 and s["rollouts_per_step"] == (256 + 128) / 2  # DAPO-style tries on seed 0
    assert s["update_rows_per_step"] == 64
    assert g["seconds_per_step"] == pytest.approx(2.0) and s["seconds_per_step"] == pytest.approx(4.0)
    # paired by seed: final differences 0.9 - 0.5 = 0.4 and 0.6 - 0.7 = -0.1; mean 0.15, sd 0.3536,
    # 95 % interval 0.15 +- 12.706 * 0.3536 / sqrt(2) = 0.15 +- 3.1766
    d = s["final_vs_reference"]
    assert d["seeds"] == 2 and d["mean"] == pytest.approx(0.15)
    assert d["low"] == pytest.approx(0.15 - 3.17655, abs=1e-4) and d["high"] == pytest.approx(0.15 + 3.17655, abs=1e-4)
    table = markdown_table(rows)
    assert (
        table.count("\n") == 3 and "| shuffle_r1 n=16 | 2 | 0.300 | 0.750 ± 0.150 | +0.150 [-3.027, +3.327] |" in table
    )


def test_paired_difference_matches_a_hand_computed_interval():
    # differences 0.1, 0.2, 0.3, 0.0, 0.4: mean 0.2, sd 0.1581, t(0.975, 4) = 2.7764 -> half width 0.19632
    ours = {0: 0.6, 1: 0.7, 2: 0.8, 3: 0.5, 4: 0.9, 9: 1.0}
    reference = {s: 0.5 for s in range(5)}
    d = paired_difference(ours, reference)
    assert d["seeds"] == 5 and d["mean"] == pytest.approx(0.2)
    assert d["low"] == pytest.approx(0.2 - 0.19632, abs=1e-4) and d["high"] == pytest.approx(0.2 + 0.19632, abs=1e-4)
    one = paired_difference({0: 0.7}, {0: 0.5, 1: 0.1})
    assert one["mean"] == pytest.approx(0.2) and one["seeds"] == 1 and np.isnan(one["low"])
    assert paired_difference({1: 0.2}, {0: 0.1})["seeds"] == 0


@pytest.mark.slow
def test_a_tiny_comparison_runs_reports_and_resumes(tmp_path, demo_cache):
    config = comparison_config(tiny_trainer_config(demo_cache), steps=2, eval_every=1)
    config.eval.max_prompts = 4
    paper = plan_tables(["paper"], [], [])["paper"]
    tables = {"paper": {name: paper[name] for name in ("grpo n=8", "shuffle_r1 n=16")}}
    specs = plan_runs(tables, {"paper": [0]})
    assert run_comparison(config, specs, tmp_path) > 0
    results = comparison_report(
        config, tables, {"paper": [0]}, specs, tmp_path, spent=1.0, command="test", machine="test machine"
    )
    assert "| grpo n=8 | 1 |" in results and "| shuffle_r1 n=16 | 1 |" in results and "test machine" in results
    prompts = config.data.rollout_batch_prompts
    # each run's batch sizes come from its own settings: n = 16 keeping half updates as many rows as n = 8
    assert f"shuffle_r1 n=16: n = 16, {16 * prompts} rollouts generated and {8 * prompts} update rows" in results
    assert f"grpo n=8: n = 8, {8 * prompts} rollouts generated and {8 * prompts} update rows" in results
    assert (tmp_path / "curves.png").stat().st_size > 0
    summary = json.loads((tmp_path / "results.json").read_text())["paper"]
    assert [r["name"] for r in summary] == ["grpo n=8", "shuffle_r1 n=16"]
    assert [r["rollouts_per_step"] for r in summary] == [8 * prompts, 16 * prompts]
    assert all(r["steps"] == 2 for r in summary)
    # a second invocation finds the runs finished and only reports
    finished = (tmp_path / "runs" / "grpo_n-8" / "seed0" / "metrics.jsonl").read_text()
    assert run_comparison(config, specs, tmp_path) == 0.0
    assert (tmp_path / "runs" / "grpo_n-8" / "seed0" / "metrics.jsonl").read_text() == finished


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


def test_comparison_config_checkpoints_at_every_validation(tmp_path):
    c = comparison_config(tiny_trainer_config(str(tmp_path)), steps=150, eval_every=15)
    assert (c.train.total_steps, c.eval.every, c.checkpoint.every, c.checkpoint.keep_last) == (150, 15, 15, 1)
    assert c.eval.before_training
