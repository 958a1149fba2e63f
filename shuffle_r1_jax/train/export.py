"""Any orbax checkpoint this project writes -> a Hugging Face directory: config.json, safetensors with hub names,
tokenizer files; for a value-based run also the critic, with its value head beside the Hugging Face layout.

`export_checkpoint` takes three layouts (`checkpoint_layout` tells them apart):

- a converted directory (`<dir>/params/` + config.json + tokenizer files, written by
  `scripts/convert_hf_to_orbax.py`): every tensor is written in the dtype it was stored in, so HF -> orbax -> HF
  with the default dtypes gives back the original tensors bit for bit;
- a trainer checkpoint directory (`<workdir>/checkpoints`, with `hf_source/`) or the trainer's workdir itself:
  one saved step, the latest, a given one or the one with the best validation accuracy, in float32 (the master
  parameters' dtype) unless a dtype is asked for.

The trainer copies its starting checkpoint's non-weight files (config, tokenizer, processor, generation
config) into `<workdir>/checkpoints/hf_source/`, and with a critic the critic's into `hf_source_critic/` with
`critic_layout.json` (whether the critic holds its own vision tower), so a workdir alone is enough to export any
saved step.

An exported critic is a Qwen2.5-VL directory transformers loads (`Qwen2_5_VLForConditionalGeneration`) plus
`value_head.safetensors`: the decoder is the critic's; the vision tower is the critic's own or, when the critic
read the policy's image features, the policy's at that step (the features it was trained on); `lm_head.weight`
(untied models) is zeros, as the critic has no output projection. `critic.checkpoint` takes such a directory to
start another run's critic.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shuffle_r1_jax.checkpoint.hf_files import copy_non_weight_files
from shuffle_r1_jax.checkpoint.orbax_params import is_orbax_params_dir, restore_params
from shuffle_r1_jax.checkpoint.train_state import TrainCheckpointer
from shuffle_r1_jax.models.qwen2_5_vl import abstract_model, load_config
from shuffle_r1_jax.models.qwen2_5_vl.lora import LoraConfig
from shuffle_r1_jax.models.qwen2_5_vl.peft_adapters import save_peft_adapters
from shuffle_r1_jax.models.qwen2_5_vl.saving import save_hf_checkpoint
from shuffle_r1_jax.models.qwen2_5_vl.value_model import abstract_value_model, write_value_head

HF_SOURCE = "hf_source"
HF_SOURCE_CRITIC = "hf_source_critic"
CRITIC_LAYOUT = "critic_layout.json"
LORA_LAYOUT = "lora.json"
CHECKPOINTS = "checkpoints"
STEP_CHOICES = ("latest", "best")
CONVERTED = "converted"
TRAINER = "trainer"
Step = int | Literal["latest", "best"] | None


def record_critic_source(checkpoints_dir: str | os.PathLike, source: str | os.PathLike, *, with_vision: bool) -> None:
    """Copies the critic's starting checkpoint's non-weight files into `<checkpoints_dir>/hf_source_critic/` with
    `critic_layout.json` ({"with_vision": bool}), for `export_trainer_checkpoint(..., critic=True)`."""
    destination = Path(checkpoints_dir) / HF_SOURCE_CRITIC
    copy_non_weight_files(source, destination)
    (destination / CRITIC_LAYOUT).write_text(json.dumps({"with_vision": with_vision}) + "\n")


def record_lora(checkpoints_dir: str | os.PathLike, lora: LoraConfig | None) -> None:
    """Writes `<checkpoints_dir>/lora.json` (the adapters' rank, alpha, targets, dropout) for a LoRA run, so its
    saved parameters (base weights and adapters) can be exported; nothing without LoRA."""
    if lora is not None:
        (Path(checkpoints_dir) / LORA_LAYOUT).write_text(json.dumps(dataclasses.asdict(lora)) + "\n")


def recorded_lora(checkpoints_dir: str | os.PathLike) -> LoraConfig | None:
    """The adapters `record_lora` wrote for the run in `checkpoints_dir`, or None (not a LoRA run)."""
    path = Path(checkpoints_dir) / LORA_LAYOUT
    if not path.exists():
        return None
    fields = json.loads(path.read_text())
    return LoraConfig(**{**fields, "targets": tuple(fields["targets"])})


def _pure_shapes(model: nnx.Module):
    return jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def export_trainer_checkpoint(
    checkpoints_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    step: Step = None,
    dtype=None,
    critic: bool = False,
    adapters: bool = False,
) -> int:
    """Writes one step of a trainer checkpoint directory as a Hugging Face model directory: the policy, or with
    `critic` the critic (see the module docstring).

    Args:
      checkpoints_dir: the trainer's checkpoint directory (`<workdir>/checkpoints`, with `hf_source/`).
      out_dir: the Hugging Face directory to write (safetensors, config and tokenizer files; a critic's
        `value_head.safetensors`).
      step: the step to export: a saved step, "latest" or None (the latest), or "best" (the kept step with the
        best `val/accuracy`).
      dtype: the safetensors dtype (None = float32, the dtype the parameters are restored in); the value head is
        written in float32.
      critic: export the critic of a value-based run instead of the policy.
      adapters: for a LoRA run, write its adapters alone in the PEFT layout (`models.qwen2_5_vl.peft_adapters`)
        instead of the policy with the adapters merged into its weights (the default for a LoRA run).

    Returns:
      The exported step.

    Raises:
      FileNotFoundError: `checkpoints_dir` has no `hf_source/config.json`, or (`critic`) no
        `hf_source_critic/critic_layout.json` (the run had no critic), or `step` is not saved.
      ValueError: `step` is "best" and the run kept no best step (no step was saved with a validation accuracy), or
        `step` is neither an integer nor one of `STEP_CHOICES`.
    """
    checkpoints_dir = Path(checkpoints_dir)
    source = checkpoints_dir / HF_SOURCE
    if not (source / "config.json").exists():
        raise FileNotFoundError(
            f"{source}/config.json is missing: is {checkpoints_dir} a trainer checkpoint directory?"
        )
    step = _saved_step(checkpoints_dir, step)
    config = load_config(source)
    lora = recorded_lora(checkpoints_dir)
    if adapters and lora is None:
        raise ValueError(f"--adapters: the run in {checkpoints_dir} trained no LoRA adapters (lora.rank was 0)")
    if adapters and critic:
        raise ValueError("--adapters and --critic: a critic has no adapters; export one or the other")
    model = abstract_model(config, dtype=jnp.float32, param_dtype=jnp.float32, lora=lora)
    if not critic:
        with TrainCheckpointer(checkpoints_dir) as checkpointer:
            restored = checkpointer.restore(step, abstract_params=_pure_shapes(model), abstract_opt_state=None)
        if adapters:
            save_peft_adapters(restored.params, lora, out_dir, base_model=str(source), dtype=dtype or np.float32)
            return restored.step
        graphdef, state = nnx.split(model)
        nnx.replace_by_pure_dict(state, restored.params)
        save_hf_checkpoint(nnx.merge(graphdef, state), out_dir, dtype=dtype)
        copy_non_weight_files(source, out_dir)
        return restored.step
    critic_source = checkpoints_dir / HF_SOURCE_CRITIC
    if not (critic_source / CRITIC_LAYOUT).exists():
        raise FileNotFoundError(
            f"{critic_source / CRITIC_LAYOUT} is missing: the run in {checkpoints_dir} trained no critic "
            "(rl.algorithm ppo, vc_ppo or orz_ppo do)"
        )
    with_vision = json.loads((critic_source / CRITIC_LAYOUT).read_text())["with_vision"]
    critic_config = load_config(critic_source)
    critic_model = abstract_value_model(critic_config, with_vision=with_vision)
    with TrainCheckpointer(checkpoints_dir) as checkpointer:
        restored = checkpointer.restore(
            step,
            abstract_params=_pure_shapes(model),
            abstract_opt_state=None,
            abstract_critic_params=_pure_shapes(critic_model),
        )
    critic_params = dict(restored.critic_params)
    value_head = critic_params.pop("value_head")
    if not with_vision:
        critic_params["visual"] = restored.params["visual"]
    target = abstract_model(critic_config, dtype=jnp.float32, param_dtype=jnp.float32)
    if target.lm_head is not None:
        critic_params["lm_head"] = {"kernel": jnp.zeros(target.lm_head.kernel.shape, jnp.float32)}
    graphdef, state = nnx.split(target)
    nnx.replace_by_pure_dict(state, critic_params)
    save_hf_checkpoint(nnx.merge(graphdef, state), out_dir, dtype=dtype)
    write_value_head(out_dir, value_head)
    copy_non_weight_files(critic_source, out_dir)
    return restored.step


def _saved_step(checkpoints_dir: Path, step: Step) -> int | None:
    """The step `TrainCheckpointer.restore` takes for `step`: an integer, or None for the latest."""
    if step is None or step == "latest":
        return None
    if step == "best":
        with TrainCheckpointer(checkpoints_dir) as checkpointer:
            best, saved = checkpointer.best_step(), checkpointer.all_steps()
        if best is None:
            raise ValueError(
                f"--step best: the run in {checkpoints_dir} kept no best step (no saved step has a val/accuracy: "
                f"the run had no validation data or checkpoint.keep_best off); saved steps: {saved}; pass "
                "--step latest or one of them"
            )
        return best
    if isinstance(step, bool) or not isinstance(step, int):
        raise ValueError(f"--step = {step!r}: expected a saved step (an integer) or one of {STEP_CHOICES}")
    return step


def checkpoint_layout(path: str | os.PathLike) -> tuple[str, Path]:
    """Which of the layouts `export_checkpoint` takes `path` is.

    Args:
      path: a converted directory, a trainer checkpoint directory or a trainer workdir.

    Returns:
      (`CONVERTED`, `path`) or (`TRAINER`, the trainer checkpoint directory: `path` or `<path>/checkpoints`).

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: `path` is none of the layouts; the message names the accepted ones and what `path` holds.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"--ckpt {path}: no such directory")
    if is_orbax_params_dir(path):
        return CONVERTED, path
    for checkpoints_dir in (path, path / CHECKPOINTS):
        if (checkpoints_dir / HF_SOURCE).is_dir():
            return TRAINER, checkpoints_dir
    entries = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in path.iterdir())
    found = f"it holds {', '.join(entries[:12])}{' ...' if len(entries) > 12 else ''}" if entries else "it is empty"
    is_hf = "config.json" in entries and any(name.endswith(".safetensors") for name in entries)
    hint = " (config.json with safetensors: already the Hugging Face layout)" if is_hf else ""
    raise ValueError(
        f"--ckpt {path} is not a checkpoint this project writes: expected a converted directory (params/ and "
        f"config.json, from scripts/convert_hf_to_orbax.py), a trainer checkpoint directory (<workdir>/checkpoints "
        f"with {HF_SOURCE}/) or a trainer workdir (with {CHECKPOINTS}/{HF_SOURCE}/); {found}{hint}"
    )


def export_converted_checkpoint(directory: str | os.PathLike, out_dir: str | os.PathLike, *, dtype=None) -> None:
    """Writes a converted directory (`params/` + config.json, `scripts/convert_hf_to_orbax.py`) as a Hugging Face
    directory: every tensor under its hub name, in `dtype` or (None) the dtype it was stored in, and the
    directory's config, tokenizer and processor files.

    Raises:
      FileNotFoundError: `directory` has no config.json.
      ValueError: naming a parameter the model expects that `params/` lacks or holds in another shape.
    """
    config = load_config(directory)
    model = abstract_model(config, dtype=jnp.float32, param_dtype=jnp.float32)
    params = restore_params(directory, _pure_shapes(model), keep_saved_dtypes=True)
    graphdef, state = nnx.split(model)
    nnx.replace_by_pure_dict(state, params)
    save_hf_checkpoint(nnx.merge(graphdef, state), out_dir, dtype=dtype)
    copy_non_weight_files(directory, out_dir)


def export_checkpoint(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    step: Step = None,
    dtype=None,
    critic: bool = False,
    adapters: bool = False,
) -> str:
    """Writes any orbax checkpoint this project writes as a Hugging Face directory (see the module docstring).

    Args:
      path: a converted directory, a trainer checkpoint directory (`<workdir>/checkpoints`) or a trainer workdir.
      out_dir: the Hugging Face directory to write.
      step: for a trainer run, a saved step, "latest" or "best" (None = the latest); must be None for a converted
        directory.
      dtype: the safetensors dtype; None keeps a converted directory's stored dtypes and writes a trainer run's
        float32 master parameters as they are.
      critic: export the critic of a value-based trainer run instead of the policy.
      adapters: export a LoRA trainer run's adapters alone, in the PEFT layout (default: merged into the policy).

    Returns:
      What was exported, for a log line (e.g. "the policy of step 3 of runs/demo/checkpoints").

    Raises:
      FileNotFoundError: `path` does not exist, lacks a file its layout needs, or `step` is not saved.
      ValueError: `path` is none of the layouts; `step` or `critic` given for a converted directory; `step` is
        "best" for a run that kept no best step, or is neither an integer nor one of `STEP_CHOICES`.
    """
    layout, directory = checkpoint_layout(path)
    if layout == CONVERTED:
        if step is not None:
            raise ValueError(
                f"--step {step}: {directory} is a converted checkpoint (params/ + config.json), one model without "
                "steps; --step applies to trainer runs"
            )
        if critic or adapters:
            flag = "--critic" if critic else "--adapters"
            raise ValueError(
                f"{flag}: {directory} is a converted checkpoint (params/ + config.json), one policy without a "
                "critic or adapters; --critic applies to trainer runs of a value-based algorithm (ppo, vc_ppo, "
                "orz_ppo), --adapters to trainer runs with LoRA (lora.rank > 0)"
            )
        export_converted_checkpoint(directory, out_dir, dtype=dtype)
        return f"the converted checkpoint {directory}"
    exported = export_trainer_checkpoint(directory, out_dir, step=step, dtype=dtype, critic=critic, adapters=adapters)
    what = "critic" if critic else "LoRA adapters (PEFT layout)" if adapters else "policy"
    return f"the {what} of step {exported} of {directory}"
