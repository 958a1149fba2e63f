"""Test session set-up: 8 simulated CPU devices for the sharding tests, XLA:CPU's backend optimization level 0
(the suite's time is mostly compilation of tiny programs, which level 0 shortens), fp32 matmuls everywhere, a
compilation cache for the session, and shared fixtures of tiny random transformers Qwen2.5-VL checkpoints (the
parity reference).

Many tests build their own trainer or sampler, whose fresh `jax.jit` objects would compile programs another test
has compiled already; jax's persistent compilation cache, in a temporary directory that lives as long as the
session (and is passed to the subprocesses the tests start), compiles each distinct program once.
"""

import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _SESSION_CACHE = tempfile.mkdtemp(prefix="shuffle-r1-jax-test-compiles-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
else:
    _SESSION_CACHE = None

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def _saved(tmp_path_factory, tie: bool, name: str):
    from tests.models.qwen2_5_vl.hf_reference import random_hf_model, tiny_hf_config

    model = random_hf_model(tiny_hf_config(tie_word_embeddings=tie), seed=1 if tie else 0)
    path = tmp_path_factory.mktemp(name)
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="session")
def untied_checkpoint(tmp_path_factory):
    """(transformers model, directory) for an untied tiny model."""
    return _saved(tmp_path_factory, tie=False, name="untied")


@pytest.fixture(scope="session")
def tied_checkpoint(tmp_path_factory):
    """(transformers model, directory) for a tiny model with tied embeddings."""
    return _saved(tmp_path_factory, tie=True, name="tied")


@pytest.fixture(scope="session")
def untied_pair(untied_checkpoint):
    """(transformers model, our model loaded in fp32)."""
    from shuffle_r1_jax.models.qwen2_5_vl import load_pretrained

    hf_model, path = untied_checkpoint
    ours, _ = load_pretrained(path)
    return hf_model, ours


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """A session-wide cache directory for the tiny demo assets (built on first use)."""
    return str(tmp_path_factory.mktemp("demo_cache"))


def pytest_sessionfinish(session, exitstatus):
    if _SESSION_CACHE is not None:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
