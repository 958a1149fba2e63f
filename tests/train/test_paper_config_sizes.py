"""The paper config's 32B and 72B sizes: the hub dimensions the planner reads, and memory settings that fit their
mesh presets (micro-batches and sampler calls split into whole rows per batch shard)."""

import importlib.util
from pathlib import Path

import pytest

from shuffle_r1_jax.models.qwen2_5_vl.config import config_of_checkpoint
from shuffle_r1_jax.parallel.mesh_config import PRESETS
from shuffle_r1_jax.train import settings

PAPER = Path(__file__).resolve().parents[2] / "configs" / "shuffle_r1_paper.py"


def _paper():
    spec = importlib.util.spec_from_file_location("shuffle_r1_paper", PAPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model, layers, hidden", [("32b", 64, 5120), ("72b", 80, 8192)])
def test_the_large_sizes_plan_on_their_mesh_presets(model, layers, hidden):
    paper = _paper()
    c = paper.get_config(f"model={model}")
    dims = config_of_checkpoint(c.model.checkpoint)
    assert (dims.text.num_hidden_layers, dims.text.hidden_size, dims.vision.out_hidden_size) == (layers, hidden, hidden)
    assert not dims.tie_word_embeddings and dims.text.num_key_value_heads == 8
    data, fsdp, tensor = PRESETS[c.mesh.preset]
    shards = data * fsdp
    assert c.train.micro_batch_rows % shards == 0 and c.rollout.prompts_per_sampler_call % shards == 0
    assert dims.text.num_key_value_heads % tensor == 0  # the KV cache splits over the tensor axis
    assert c.model.attention_impl == paper.MEMORY[model].attention_impl
    # on the tests' 8 devices the preset is refused by name
    with pytest.raises(settings.ConfigError, match=f"mesh.preset = '{c.mesh.preset}'"):
        settings.resolve(c, check_inputs=False)
    c.mesh.preset = ""
    run = settings.resolve(c, check_inputs=False)
    update_rows = c.data.rollout_batch_prompts * run.rl.update_rows_per_prompt // run.train.num_minibatches
    assert update_rows % c.train.micro_batch_rows == 0
