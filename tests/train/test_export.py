"""Export to the Hugging Face layout from every orbax checkpoint the project writes: a converted directory
(HF -> orbax -> HF through the two scripts gives the original tensors back bit for bit), a trainer checkpoint
directory or workdir (a chosen step: latest, a number, the best), and the errors for what does not fit.

References are independent of the export path: the original safetensors files, and for trainer steps a tiny
checkpoint written directly from the same seeded weights (`make_tiny_checkpoint(seed=step)`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.flax import load_file

from shuffle_r1_jax.checkpoint.hf_files import NON_WEIGHT_FILES, copy_non_weight_files
from shuffle_r1_jax.checkpoint.orbax_params import save_params
from shuffle_r1_jax.checkpoint.train_state import TrainCheckpointer
from shuffle_r1_jax.demo.tiny_checkpoint import make_tiny_checkpoint
from shuffle_r1_jax.models.qwen2_5_vl import load_pretrained
from shuffle_r1_jax.models.qwen2_5_vl.random_weights import random_model
from shuffle_r1_jax.train.export import export_checkpoint

REPO = Path(__file__).resolve().parents[2]
ACCURACY = {1: 0.2, 2: 0.7, 3: 0.4}  # step -> val/accuracy: the best step (2) is neither the first nor the latest


def run_script(name: str, *args) -> subprocess.CompletedProcess:
    """Runs `scripts/<name>` on this tree's package (not an installed copy)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *map(str, args)], capture_output=True, text=True, env=env
    )


def tensors(directory: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """Every tensor of a directory's safetensors files: name -> (dtype, shape, raw bytes)."""
    found = {}
    for file in sorted(directory.glob("*.safetensors")):
        for name, array in load_file(file).items():
            array = np.asarray(array)
            found[name] = (array.dtype.name, array.shape, array.tobytes())
    return found


def assert_same_tensors(got: Path, expected: Path) -> None:
    got_tensors, expected_tensors = tensors(got), tensors(expected)
    assert sorted(got_tensors) == sorted(expected_tensors)
    for name, (dtype, shape, data) in expected_tensors.items():
        assert got_tensors[name][:2] == (dtype, shape), name
        assert got_tensors[name][2] == data, name


@pytest.mark.parametrize(
    "dtype, convert_args",
    [
        pytest.param(jnp.bfloat16, (), id="bfloat16"),
        pytest.param(jnp.float32, ("--dtype", "float32"), id="float32", marks=pytest.mark.slow),
    ],
)
def test_hf_to_orbax_to_hf_through_the_scripts_is_bit_identical(tmp_path, dtype, convert_args):
    hf = tmp_path / "hf"
    make_tiny_checkpoint(hf, "test", dtype=dtype)
    converted = run_script("convert_hf_to_orbax.py", "--hf_dir", hf, "--out", tmp_path / "orbax", *convert_args)
    assert converted.returncode == 0, converted.stderr[-2000:]
    exported = run_script("export_to_hf.py", "--ckpt", tmp_path / "orbax", "--out", tmp_path / "back")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "the converted checkpoint" in exported.stdout

    assert_same_tensors(tmp_path / "back", hf)
    assert {d for d, _, _ in tensors(tmp_path / "back").values()} == {jnp.dtype(dtype).name}
    copied = [name for name in NON_WEIGHT_FILES if (hf / name).exists()]
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"} <= set(copied)
    for name in copied:
        assert (tmp_path / "back" / name).read_bytes() == (hf / name).read_bytes(), name


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory) -> tuple[Path, dict[int, Path]]:
    """(a trainer workdir, step -> reference HF directory): `checkpoints/` holds steps 2 and 3 (step 1 was retired
    by keep_last = 1; step 2 is kept as the best by `ACCURACY`), step s's parameters are seed s's tiny weights."""
    root = tmp_path_factory.mktemp("trainer_run")
    references = {}
    for step in ACCURACY:
        references[step] = root / f"reference_{step}"
        config = make_tiny_checkpoint(references[step], "test", seed=step)
    workdir = root / "run"
    copy_non_weight_files(references[1], workdir / "checkpoints" / "hf_source")
    with TrainCheckpointer(workdir / "checkpoints", keep_last=1) as checkpointer:
        for step, accuracy in ACCURACY.items():
            params = nnx.to_pure_dict(nnx.state(random_model(config, seed=step), nnx.Param))
            checkpointer.save(step, params, {}, jax.random.key(step), {}, None, metrics={"val/accuracy": accuracy})
    return workdir, references


def test_the_script_exports_the_best_step_of_a_trainer_workdir(trainer_run, tmp_path):
    workdir, references = trainer_run
    done = run_script("export_to_hf.py", "--ckpt", workdir, "--step", "best", "--out", tmp_path / "best")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"the policy of step 2 of {workdir / 'checkpoints'}" in done.stdout
    assert_same_tensors(tmp_path / "best", references[2])
    assert (tmp_path / "best" / "tokenizer.json").read_bytes() == (references[2] / "tokenizer.json").read_bytes()


@pytest.mark.parametrize("step, expected", [(None, 3), ("latest", 3), (2, 2)])
def test_a_checkpoint_directory_exports_the_step_asked_for_in_float32(trainer_run, tmp_path, step, expected):
    workdir, references = trainer_run
    described = export_checkpoint(workdir / "checkpoints", tmp_path / "out", step=step)
    assert described == f"the policy of step {expected} of {workdir / 'checkpoints'}"
    assert_same_tensors(tmp_path / "out", references[expected])


def test_dtype_overrides_the_stored_one(trainer_run, tmp_path):
    workdir, references = trainer_run
    export_checkpoint(workdir, tmp_path / "out", dtype=jnp.bfloat16)
    ours, _ = load_pretrained(tmp_path / "out", jnp.bfloat16)
    reference, _ = load_pretrained(references[3])
    got = jax.tree.leaves(nnx.to_pure_dict(nnx.state(ours, nnx.Param)))
    expected = jax.tree.leaves(nnx.to_pure_dict(nnx.state(reference, nnx.Param)))
    assert {x.dtype for x in got} == {jnp.dtype(jnp.bfloat16)}
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b.astype(jnp.bfloat16)))


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """A converted directory (what scripts/convert_hf_to_orbax.py writes), made in this process."""
    root = tmp_path_factory.mktemp("converted")
    make_tiny_checkpoint(root / "hf", "test")
    model, _ = load_pretrained(root / "hf")
    save_params(nnx.to_pure_dict(nnx.state(model, nnx.Param)), root / "orbax")
    copy_non_weight_files(root / "hf", root / "orbax")
    return root / "orbax"


@pytest.mark.parametrize("step", [3, "latest", "best"])
def test_step_is_refused_for_a_converted_directory(converted, tmp_path, step):
    with pytest.raises(ValueError, match=f"^--step {step}: {converted} is a converted checkpoint"):
        export_checkpoint(converted, tmp_path / "out", step=step)
    assert not (tmp_path / "out").exists()


def test_critic_is_refused_for_a_converted_directory(converted, tmp_path):
    with pytest.raises(ValueError, match=f"^--critic: {converted} is a converted checkpoint"):
        export_checkpoint(converted, tmp_path / "out", critic=True)


def test_best_is_refused_for_a_run_that_kept_no_best(trainer_run, tmp_path):
    workdir, _ = trainer_run
    unvalidated = tmp_path / "unvalidated"
    copy_non_weight_files(workdir / "checkpoints" / "hf_source", unvalidated / "checkpoints" / "hf_source")
    with TrainCheckpointer(unvalidated / "checkpoints") as checkpointer:
        checkpointer.save(1, {"w": jnp.ones(2)}, {}, jax.random.key(0), {}, None)
    with pytest.raises(ValueError, match=r"^--step best: .* kept no best step .* saved steps: \[1\]"):
        export_checkpoint(unvalidated, tmp_path / "out", step="best")


def test_an_unknown_step_name_is_refused(trainer_run, tmp_path):
    with pytest.raises(ValueError, match=r"--step = 'first': expected a saved step \(an integer\) or one of"):
        export_checkpoint(trainer_run[0], tmp_path / "out", step="first")


def test_an_empty_directory_exits_2_naming_the_accepted_layouts(tmp_path):
    (tmp_path / "empty").mkdir()
    done = run_script("export_to_hf.py", "--ckpt", tmp_path / "empty", "--out", tmp_path / "out")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: --ckpt {tmp_path / 'empty'} is not a checkpoint this project writes")
    for layout in ("a converted directory", "a trainer checkpoint directory", "a trainer workdir", "it is empty"):
        assert layout in done.stderr
    assert not (tmp_path / "out").exists()


def test_an_hf_directory_is_named_as_what_it_is(converted, tmp_path):
    with pytest.raises(ValueError, match=r"it holds .*model.safetensors.* already the Hugging Face layout"):
        export_checkpoint(converted.parent / "hf", tmp_path / "out")
