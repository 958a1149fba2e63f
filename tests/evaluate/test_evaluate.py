"""`python -m shuffle_r1_jax.evaluate` end to end on the tiny demo setup: its figures equal the trainer's validation
for the same checkpoint, seed and settings; every sample is written; unusable records are counted and skipped as
in training; a trainer directory and a missing dataset stop with a message naming the flag."""

import collections
import json
import types

import pyarrow.parquet as pq
import pytest

from shuffle_r1_jax.data.examples import BadRecord, make_example
from shuffle_r1_jax.data.pipeline import BadRecordError
from shuffle_r1_jax.data.sources import RecordSource
from shuffle_r1_jax.evaluate import __main__ as entrypoint
from shuffle_r1_jax.evaluate.run import EvaluateError, evaluate_checkpoint, evaluation_settings
from shuffle_r1_jax.train import settings as run_settings
from shuffle_r1_jax.train.components import prompt_encoder
from tests.train.conftest import make_trainer, tiny_trainer_config


@pytest.fixture(scope="module")
def demo_inputs(demo_cache):
    """(config, warm checkpoint, validation parquet) of the tiny demo: 8 validation records, 2 samples each, scored
    0 or 1 by sample (`toy_rewards.has_letter_e`)."""
    c = tiny_trainer_config(demo_cache)
    c.eval.before_training = True
    c.reward.name = "tests.evaluate.toy_rewards:has_letter_e"
    prepared, _ = run_settings.prepare(c)
    return c, prepared.model.checkpoint, prepared.data.val


def _read_jsonl(path):
    return [json.loads(line) for line in open(path)]


def _bad_reasons(settings) -> collections.Counter:
    """The unusable records of `data.val` by reason, as the data module judges them one by one."""
    source = RecordSource(settings.data.val, settings.data.columns)
    encoder = prompt_encoder(settings.model.checkpoint, settings.data)
    examples = (make_example(source[i], encoder, source.columns) for i in range(len(source)))
    return collections.Counter(e.reason for e in examples if isinstance(e, BadRecord))


@pytest.mark.slow
def test_evaluate_equals_the_trainers_step_0_validation(demo_inputs, tmp_path):
    config, checkpoint, val = demo_inputs
    c = config.copy_and_resolve_references()
    c.train.total_steps = 1
    trainer = make_trainer(c, tmp_path / "run")
    try:
        trainer.fit()
    finally:
        trainer.close()
    logged = _read_jsonl(tmp_path / "run" / "metrics.jsonl")
    trained = {k: v for k, v in logged[0].items() if k.startswith("val/")}
    assert logged[0]["step"] == 0 and "val/accuracy" in trained

    settings = evaluation_settings(config.copy_and_resolve_references(), checkpoint, val)
    summary = evaluate_checkpoint(settings, tmp_path / "eval", progress=False)
    print("trainer step 0:", trained, "\nevaluate:", summary["overall"])
    assert 0 < trained["val/accuracy"] < 1  # the samples decide: equal figures mean equal samples
    assert summary["validation_metrics"] == trained
    n = settings.eval.n
    assert summary["overall"][f"mean@{n}"] == trained["val/accuracy"]
    assert summary["overall"]["greedy"] == trained["val/greedy_accuracy"]
    for source, figures in summary["data_sources"].items():
        assert figures[f"mean@{n}"] == trained[f"val/accuracy/{source}"]


@pytest.mark.slow
def test_every_sample_is_written_with_its_figures(demo_inputs, tmp_path):
    config, checkpoint, val = demo_inputs
    c = config.copy_and_resolve_references()
    c.eval.n, c.eval.pass_k = 4, (1, 2, 4, 8)
    settings = evaluation_settings(c, checkpoint, val)
    assert settings.eval.pass_k == (1, 2, 4)  # k above n left out
    summary = evaluate_checkpoint(settings, tmp_path, progress=False)
    records = pq.read_table(val.partition("@")[0]).num_rows
    bad = _bad_reasons(settings)
    prompts = records - sum(bad.values())
    samples, greedy = _read_jsonl(tmp_path / "samples.jsonl"), _read_jsonl(tmp_path / "greedy.jsonl")
    assert len(samples) == prompts * 4 and len(greedy) == prompts
    indices = sorted({r["prompt_index"] for r in samples})
    assert len(indices) == prompts and [(r["prompt_index"], r["sample"]) for r in samples] == [
        (i, j) for i in indices for j in range(4)
    ]
    keys = {"prompt_index", "record_id", "data_source", "sample", "answer", "response", "reward", "accuracy"}
    assert keys | {"length", "truncated"} == set(samples[0])
    assert all(0 <= r["length"] <= settings.rollout.max_new_tokens for r in samples)
    assert all(r["length"] == settings.rollout.max_new_tokens for r in samples if r["truncated"])
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    overall = summary["overall"]
    assert set(overall) >= {"mean@4", "pass@1", "pass@2", "pass@4", "greedy", "response_length"}
    assert overall["pass@1"] == pytest.approx(sum(r["accuracy"] >= 1 for r in samples) / len(samples))
    assert overall["pass@1"] <= overall["pass@2"] <= overall["pass@4"]
    sources = {r["data_source"] for r in samples}
    assert set(summary["data_sources"]) == sources
    assert sum(f["prompts"] for f in summary["data_sources"].values()) == prompts
    for source, figures in summary["data_sources"].items():
        mine = [r["accuracy"] for r in samples if r["data_source"] == source]
        assert figures["mean@4"] == pytest.approx(sum(mine) / len(mine))
    assert summary["records"] == {
        "read": records,
        "used": prompts,
        "unusable": records - prompts,
        "unusable_by_reason": dict(bad),
    }
    assert "wrote" in entrypoint.format_summary(summary)


@pytest.mark.slow
def test_an_unusable_record_is_counted_and_skipped_or_stops_the_run(demo_inputs, tmp_path):
    config, checkpoint, val = demo_inputs
    table = pq.read_table(val.partition("@")[0])
    problems = table.column("problem").to_pylist()
    problems[1] = "   "
    broken = tmp_path / "val.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("problem"), "problem", [problems]), broken)
    settings = evaluation_settings(config.copy_and_resolve_references(), checkpoint, str(broken))
    bad = _bad_reasons(settings)
    assert bad["empty_prompt"] == 1
    summary = evaluate_checkpoint(settings, tmp_path / "eval", progress=False)
    usable = table.num_rows - sum(bad.values())
    assert summary["records"] == {
        "read": table.num_rows,
        "used": usable,
        "unusable": sum(bad.values()),
        "unusable_by_reason": dict(bad),
    }
    samples = _read_jsonl(tmp_path / "eval" / "samples.jsonl")
    assert len(samples) == usable * settings.eval.n and summary["overall"]["prompts"] == usable
    assert 1 not in {r["prompt_index"] for r in samples}
    assert "empty_prompt 1" in entrypoint.format_summary(summary)

    c = config.copy_and_resolve_references()
    c.data.on_bad_record = "error"
    with pytest.raises(BadRecordError, match="empty_prompt"):
        evaluate_checkpoint(evaluation_settings(c, checkpoint, str(broken)), tmp_path / "stop", progress=False)


def test_a_trainer_directory_asks_for_an_export(demo_cache, tmp_path):
    (tmp_path / "checkpoints" / "hf_source").mkdir(parents=True)  # what every trainer run writes
    c = tiny_trainer_config(demo_cache)
    for path in (tmp_path, tmp_path / "checkpoints"):
        with pytest.raises(EvaluateError, match=r"--checkpoint .* is a trainer's .* export it first .*export_to_hf"):
            evaluation_settings(c, str(path), "unused.parquet")


def test_a_missing_checkpoint_or_dataset_names_the_flag(demo_cache, tmp_path):
    c = tiny_trainer_config(demo_cache)
    with pytest.raises(EvaluateError, match=r"--checkpoint '/no/such/dir' is not a directory"):
        evaluation_settings(c, "/no/such/dir", "unused.parquet")
    c.setup = ""
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EvaluateError, match=r"--data '/no/such.parquet': .*/no/such.parquet"):
        evaluation_settings(c, str(tmp_path), "/no/such.parquet")


def _flags(monkeypatch, tmp_path, **values):
    monkeypatch.setattr(entrypoint.logging, "basicConfig", lambda **kwargs: None)
    monkeypatch.setattr(entrypoint.absl_logging, "set_verbosity", lambda level: None)
    values = {"config": None, "checkpoint": None, "data": None, "out": str(tmp_path / "out"), "verbose": False} | values
    for name, value in values.items():
        monkeypatch.setattr(entrypoint, f"_{name.upper()}", types.SimpleNamespace(value=value))


def test_the_entrypoint_exits_2_with_one_line_naming_the_flag(monkeypatch, capsys, tmp_path, demo_cache):
    (tmp_path / "run" / "checkpoints" / "hf_source").mkdir(parents=True)
    _flags(monkeypatch, tmp_path, config=tiny_trainer_config(demo_cache), checkpoint=str(tmp_path / "run"))
    assert entrypoint.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --checkpoint ") and "export it first" in err and err.count("\n") == 1

    c = tiny_trainer_config(demo_cache)
    c.setup, c.data.val = "", ""  # no dataset anywhere
    _flags(monkeypatch, tmp_path, config=c)
    assert entrypoint.main([]) == 2
    assert (
        capsys.readouterr().err == "error: --data is not given and the config has no data.val: give a dataset "
        "path[@split]\n"
    )
