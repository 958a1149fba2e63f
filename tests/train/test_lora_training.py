"""LoRA runs end to end on the tiny model: only the adapters train (the base weights stay bit-equal in bf16, the
optimizer state holds the adapters' moments only), a run resumes exactly after SIGKILL, and a run exports with its
adapters merged (logits equal to the adapter forward) and as PEFT adapters that transformers + peft load to the
same logits."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.nnx import traversals

from shuffle_r1_jax.models.qwen2_5_vl import abstract_model, forward_logits, load_config, load_pretrained
from shuffle_r1_jax.models.qwen2_5_vl.lora import is_adapter_path
from shuffle_r1_jax.train import settings
from shuffle_r1_jax.train.export import export_checkpoint, recorded_lora
from tests.train.conftest import kill_after_step_2, make_trainer, tiny_trainer_config

CONFIG_FILE = """
from tests.train.test_lora_training import lora_config

def get_config():
    return lora_config({cache!r}, {steps})
"""


def lora_config(cache: str, steps: int, base_dtype: str = "bfloat16"):
    c = tiny_trainer_config(cache)
    c.train.total_steps = steps
    c.lora.rank, c.lora.alpha, c.lora.dropout, c.lora.base_dtype = 4, 8.0, 0.1, base_dtype
    c.loss.kl_coef = 0.05  # the reference policy is the base (adapters off)
    c.optim.learning_rate = 1e-2
    c.reward.name = "tests.train.toy_rewards:letter_a_fraction"  # graded rewards: advantages that are not all 0
    return c


def _run(config, workdir):
    trainer = make_trainer(config, workdir)
    try:
        summary = trainer.fit()
        return summary, trainer
    finally:
        trainer.close()


def _model(checkpoint, lora, params):
    graphdef, state = nnx.split(abstract_model(load_config(checkpoint), lora=lora))
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)


def _inputs(config):
    ids = np.asarray(
        [[40, config.vision_start_token_id] + [config.image_token_id] * 4 + [config.vision_end_token_id, 41, 42]]
    )
    pixels = np.random.default_rng(0).standard_normal((16, 1176)).astype(np.float32)
    return ids, pixels, np.asarray([(1, 4, 4)])


STEPS = 4


@pytest.fixture(scope="module")
def lora_run(demo_cache, tmp_path_factory):
    """(summary, trainer, workdir) of an uninterrupted 4-step LoRA run."""
    workdir = tmp_path_factory.mktemp("lora") / "uninterrupted"
    summary, trainer = _run(lora_config(demo_cache, STEPS), workdir)
    return summary, trainer, workdir


@pytest.mark.slow
def test_a_lora_run_trains_the_adapters_only(lora_run):
    summary, trainer, workdir = lora_run
    start, _ = load_pretrained(trainer.settings.model.checkpoint, param_dtype=jnp.bfloat16)
    start = traversals.flatten_mapping(nnx.to_pure_dict(nnx.state(start, nnx.Param)))
    trained = traversals.flatten_mapping(trainer.params)
    adapters = {p: v for p, v in trained.items() if is_adapter_path(p)}
    assert set(trained) - set(adapters) == set(start)
    for path, value in start.items():
        assert trained[path].dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(trained[path]), np.asarray(value), err_msg=str(path))
    assert all(v.dtype == jnp.float32 for v in adapters.values())
    assert max(float(jnp.abs(v).max()) for p, v in adapters.items() if p[-1] == "lora_b") > 0
    moments = sum(x.size for x in jax.tree.leaves(trainer.opt_state) if x.ndim > 0)
    assert moments == 2 * sum(v.size for v in adapters.values())
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    kl = [r["kl_ref"] for r in records if "kl_ref" in r]
    assert summary.steps == STEPS and len(kl) == STEPS and kl[-1] > 0  # the reference is the base; adapters moved
    assert recorded_lora(workdir / "checkpoints") == trainer.settings.model.lora


@pytest.mark.slow
def test_a_lora_run_resumes_after_sigkill_exactly(lora_run, demo_cache, tmp_path):
    _, uninterrupted, _ = lora_run
    config_file = tmp_path / "lora_config.py"
    config_file.write_text(CONFIG_FILE.format(cache=demo_cache, steps=STEPS))
    workdir = tmp_path / "killed"
    kill_after_step_2(config_file, workdir, max_delay=1.0)  # somewhere in step 3 or 4, or a save

    summary, resumed = _run(lora_config(demo_cache, STEPS), workdir)
    assert summary.steps == STEPS
    for state in ("params", "opt_state"):
        for a, b in zip(jax.tree.leaves(getattr(resumed, state)), jax.tree.leaves(getattr(uninterrupted, state))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6, err_msg=state)


@pytest.mark.slow
def test_a_lora_run_exports_merged_and_as_peft_adapters(demo_cache, default_step, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import Qwen2_5_VLForConditionalGeneration

    _, trainer = _run(lora_config(demo_cache, 1, base_dtype="float32"), tmp_path / "run")
    start = trainer.settings.model.checkpoint
    adapted = _model(start, trainer.settings.model.lora, trainer.params)
    config = adapted.config
    ids, pixels, grids = _inputs(config)
    expected = np.asarray(forward_logits(adapted, ids, np.ones_like(ids), pixels, grids))
    base, _ = load_pretrained(start)
    assert np.abs(np.asarray(forward_logits(base, ids, np.ones_like(ids), pixels, grids)) - expected).max() > 1e-4

    assert "policy of step 1" in export_checkpoint(tmp_path / "run", tmp_path / "merged")
    merged, _ = load_pretrained(tmp_path / "merged")
    np.testing.assert_allclose(
        np.asarray(forward_logits(merged, ids, np.ones_like(ids), pixels, grids)), expected, atol=1e-5
    )

    assert "LoRA adapters" in export_checkpoint(tmp_path / "run", tmp_path / "peft", adapters=True)
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(start, attn_implementation="eager").float().eval()
    hf = PeftModel.from_pretrained(hf, tmp_path / "peft").eval()
    with torch.no_grad():
        got = hf(
            input_ids=torch.as_tensor(ids),
            attention_mask=torch.ones_like(torch.as_tensor(ids)),
            pixel_values=torch.as_tensor(pixels),
            image_grid_thw=torch.as_tensor(grids),
            mm_token_type_ids=torch.as_tensor((ids == config.image_token_id).astype(np.int64)),
        ).logits.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    *_, full_run = default_step  # a shared one-step run without adapters
    with pytest.raises(ValueError, match="--adapters: the run in .* trained no LoRA adapters"):
        export_checkpoint(full_run, tmp_path / "none", adapters=True)


@pytest.mark.parametrize(
    "edit, message",
    [
        (dict(rank=-1), "lora.rank = -1 must be an integer >= 0"),
        (dict(rank=2, alpha=0.0), "lora.alpha = 0.0 must be > 0"),
        (dict(rank=2, targets=("qkv",)), "lora.targets = \\('qkv',\\)"),
        (dict(rank=2, dropout=1.5), "lora.dropout = 1.5"),
        (dict(rank=2, base_dtype="int8"), "lora.base_dtype = 'int8'"),
    ],
)
def test_lora_config_errors_name_the_key(edit, message, demo_cache):
    c = tiny_trainer_config(demo_cache)
    for key, value in edit.items():
        c.lora[key] = value
    with pytest.raises(settings.ConfigError, match=message):
        settings.resolve(c, check_inputs=False)


def test_lora_needs_a_frozen_vision_tower(demo_cache):
    c = tiny_trainer_config(demo_cache)
    c.lora.rank, c.optim.freeze_vision = 2, False
    with pytest.raises(settings.ConfigError, match="set optim.freeze_vision = True"):
        settings.resolve(c, check_inputs=False)
    c.optim.freeze_vision = True
    resolved = settings.resolve(c, check_inputs=False)
    assert resolved.model.lora.rank == 2 and resolved.optimizer.adapters_only
    assert resolved.model.base_dtype == jnp.bfloat16 and resolved.model.param_dtype == jnp.float32
