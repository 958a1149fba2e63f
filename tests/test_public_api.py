"""The public import paths users rely on stay where they are, whatever the package's layout."""

import importlib

import pytest

PUBLIC = [
    ("shuffle_r1_jax.models.qwen2_5_vl", ("load_pretrained", "forward_logits", "prepare_inputs")),
    ("shuffle_r1_jax.sampling", ("Sampler", "SamplingConfig")),
    ("shuffle_r1_jax.processing.image", ("preprocess_images", "ImagePreprocessConfig")),
    ("shuffle_r1_jax.processing.prompts", ("PromptEncoder",)),
    ("shuffle_r1_jax.rl.pts", ("pairwise_trajectory_sampling",)),
    ("shuffle_r1_jax.rl.batch_shuffle", ("advantage_batch_shuffle",)),
    ("shuffle_r1_jax.rl.gae", ("gae", "decoupled_gae", "value_metrics")),
    ("shuffle_r1_jax.rl.value_loss", ("clipped_value_loss",)),
    ("shuffle_r1_jax.rl.opmd", ("opmd_loss",)),
    ("shuffle_r1_jax.models.qwen2_5_vl.value_model", ("Qwen25VLValueModel", "read_value_head", "write_value_head")),
    ("shuffle_r1_jax.train.export", ("export_checkpoint", "export_trainer_checkpoint")),
    ("shuffle_r1_jax.processing.tiny_tokenizer", ("save_tiny_tokenizer", "build_tiny_tokenizer", "CHAT_TEMPLATE")),
]


@pytest.mark.parametrize("module, names", PUBLIC)
def test_public_names_import(module, names):
    loaded = importlib.import_module(module)
    assert all(callable(getattr(loaded, name)) or isinstance(getattr(loaded, name), str) for name in names)


def test_the_tiny_tokenizer_alias_is_the_demo_module():
    from shuffle_r1_jax.demo import tiny_tokenizer
    from shuffle_r1_jax.processing import tiny_tokenizer as alias

    assert alias.save_tiny_tokenizer is tiny_tokenizer.save_tiny_tokenizer
