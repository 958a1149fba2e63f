"""The recipe configs in configs/: each resolves, on the demo and on the paper's base where it has both, to the
settings its docstring describes."""

from pathlib import Path

import pytest

from shuffle_r1_jax.processing.prompts import load_prompt_format
from shuffle_r1_jax.train import settings
from shuffle_r1_jax.train.defaults import load_config_file

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _resolve(name: str, arg: str | None, tmp_path) -> settings.RunSettings:
    c = load_config_file(CONFIGS / f"{name}.py", arg)
    if "demo" in c:
        c.demo.cache_dir = str(tmp_path)
    return settings.resolve(c, check_inputs=False)


@pytest.mark.parametrize("arg", [None, "base=paper,model=7b"])
def test_sampling_recipes(arg, tmp_path):
    prioritized = _resolve("prioritized_sampling", arg, tmp_path)
    assert prioritized.data.sampling.mode == "prioritized" and prioritized.data.sampling.priority_floor == 0.1
    curriculum = _resolve("curriculum", arg, tmp_path).data.sampling
    expected = ("difficulty", "ascending") if arg is None else ("pass_rate", "descending")
    assert (curriculum.mode, curriculum.curriculum_column, curriculum.curriculum_order) == ("curriculum", *expected)


@pytest.mark.parametrize(
    "arg, lengths", [(None, [24, 48]), ("base=paper", [512, 1024, 2048]), ("start=0.25", [12, 24, 48])]
)
def test_progressive_length_doubles_in_equal_parts(arg, lengths, tmp_path):
    run = _resolve("progressive_length", arg, tmp_path)
    total = run.train.total_steps
    assert [p.settings.rollout.max_new_tokens for p in run.phases] == lengths
    assert [p.first_step for p in run.phases] == [i * total // len(lengths) for i in range(len(lengths))]
    assert run.rollout.max_new_tokens == lengths[-1]


def test_staged_recipes_split_the_run(tmp_path):
    lmm = _resolve("text_then_images", "model=3b,text=data/text@train,text_share=0.25", tmp_path)
    text, images = lmm.phases
    assert (text.name, text.settings.data.train, text.settings.data.columns.images) == ("text", "data/text@train", None)
    assert images.settings.data.train == "data/geometry3k@train" and images.settings.data.columns.images == "images"
    assert text.last_step == lmm.train.total_steps // 4 == images.first_step

    curr = _resolve("question_type_stages", "yes_no=y@train,choice=c@train", tmp_path)
    assert [p.name for p in curr.phases] == ["yes_no", "choice", "open"]
    assert [p.settings.reward.name for p in curr.phases] == ["r1v", "r1v", "math_official"]
    assert [p.settings.data.train for p in curr.phases] == ["y@train", "c@train", "data/geometry3k@train"]
    assert curr.phases[-1].last_step == curr.train.total_steps


@pytest.mark.parametrize("arg", [None, "base=paper"])
def test_algorithm_recipes(arg, tmp_path):
    dapo = _resolve("dapo", arg, tmp_path)
    assert dapo.rl.dynamic_sampling and dapo.reward.overlong_buffer == dapo.rollout.max_new_tokens // 5
    cppo = _resolve("cppo", arg, tmp_path)
    assert cppo.rl.selection.selection == "cppo" and cppo.rl.fill_batches == 2 and cppo.rollout.n == 8
    opmd = _resolve("opmd", arg, tmp_path)
    assert opmd.loss.loss_kind == "opmd" and opmd.data.sampling.mode == "prioritized"


def test_recipe_arguments_are_checked():
    with pytest.raises(ValueError, match=r"config arguments \['model'\] apply to base=paper only"):
        load_config_file(CONFIGS / "prioritized_sampling.py", "model=7b")
    with pytest.raises(ValueError, match="config argument base='tpu'"):
        load_config_file(CONFIGS / "dapo.py", "base=tpu")
    with pytest.raises(ValueError, match="expected key=value with key one of"):
        load_config_file(CONFIGS / "curriculum.py", "steps=3")


def test_step_grpo_recipe(tmp_path):
    run = _resolve("step_grpo", "model=3b,key_steps=steps", tmp_path)
    assert (run.reward.name, run.data.prompt_format, run.data.columns.reward) == ("step_grpo", "step", ("steps",))
    assert dict(run.reward.options)["rar_weight"] == 0.1 and run.rl.estimator == "grpo"
    assert _resolve("step_grpo", None, tmp_path).data.columns.reward == ()


@pytest.mark.parametrize("arg", [None, "base=paper,model=7b"])
def test_grounding_recipe(arg, tmp_path):
    run = _resolve("grounding", arg, tmp_path)
    assert run.reward.name == "grounding_iou" and dict(run.reward.options) == {"require_tags": True}
    if arg is None:
        c = load_config_file(CONFIGS / "grounding.py")
        assert (c.demo.task_family, c.demo.image_size, run.data.max_prompt_length) == ("grounding", 70, 80)
    else:
        assert (run.data.train, run.data.val) == ("data/refcoco@train", "data/refcoco@val")
        assert run.train.total_steps == 120624 // 512
        assert '[{"bbox_2d": [x1, y1, x2, y2]' in load_prompt_format(run.data.prompt_format).apply("<image>the dog")
