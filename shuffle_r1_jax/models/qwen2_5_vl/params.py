"""The correspondence between our Qwen2.5-VL parameter paths and Hugging Face tensor names, both directions.

Each of our parameters maps to one HF tensor by one of two rules:
  * "kernel": HF stores a torch Linear/Conv weight `[prod(out), prod(in)]` (conv kernels flattened in
    [channel, frame, row, col] order); ours is `[*in_shape, *out_shape]`: transpose and reshape.
  * "reshape": biases, norm scales, embeddings: same values, our shape may split a dimension (per head).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig

Path = tuple


@dataclasses.dataclass(frozen=True)
class TensorRule:
    """How one of our parameters maps to one HF tensor.

    Attributes:
      path: our state path, e.g. `("layers", 0, "self_attn", "q_proj", "kernel")`.
      hf_name: the HF hub tensor name.
      kind: "kernel" (transpose and reshape) or "reshape" (same values, reshaped); see the module docstring.
      n_in: for a kernel, how many leading dims of our shape are input dims (the rest are output dims).
    """

    path: Path
    hf_name: str
    kind: str
    n_in: int = 1


def _dense(prefix_ours: Path, prefix_hf: str, bias: bool, n_in: int = 1) -> list[TensorRule]:
    rules = [TensorRule(prefix_ours + ("kernel",), f"{prefix_hf}.weight", "kernel", n_in)]
    if bias:
        rules.append(TensorRule(prefix_ours + ("bias",), f"{prefix_hf}.bias", "reshape"))
    return rules


def _norm(prefix_ours: Path, prefix_hf: str) -> TensorRule:
    return TensorRule(prefix_ours + ("scale",), f"{prefix_hf}.weight", "reshape")


def tensor_rules(config: Qwen25VLConfig) -> list[TensorRule]:
    """Every parameter of `Qwen25VL(config)` with its HF hub name (lm_head only when untied)."""
    rules = [TensorRule(("visual", "patch_embed", "kernel"), "visual.patch_embed.proj.weight", "kernel")]
    for i in range(config.vision.depth):
        ours, hf = ("visual", "blocks", i), f"visual.blocks.{i}"
        rules += [_norm(ours + ("norm1",), f"{hf}.norm1"), _norm(ours + ("norm2",), f"{hf}.norm2")]
        rules += _dense(ours + ("attn", "qkv"), f"{hf}.attn.qkv", bias=True)
        rules += _dense(ours + ("attn", "proj"), f"{hf}.attn.proj", bias=True)
        for proj in ("gate_proj", "up_proj", "down_proj"):
            rules += _dense(ours + ("mlp", proj), f"{hf}.mlp.{proj}", bias=True)
    rules.append(_norm(("visual", "merger", "ln_q"), "visual.merger.ln_q"))
    rules += _dense(("visual", "merger", "fc1"), "visual.merger.mlp.0", bias=True)
    rules += _dense(("visual", "merger", "fc2"), "visual.merger.mlp.2", bias=True)
    rules.append(TensorRule(("embed_tokens", "embedding"), "model.embed_tokens.weight", "reshape"))
    for i in range(config.text.num_hidden_layers):
        ours, hf = ("layers", i), f"model.layers.{i}"
        rules += [
            _norm(ours + ("input_layernorm",), f"{hf}.input_layernorm"),
            _norm(ours + ("post_attention_layernorm",), f"{hf}.post_attention_layernorm"),
        ]
        for proj in ("q_proj", "k_proj", "v_proj"):
            rules += _dense(ours + ("self_attn", proj), f"{hf}.self_attn.{proj}", bias=True)
        rules += _dense(ours + ("self_attn", "o_proj"), f"{hf}.self_attn.o_proj", bias=False, n_in=2)
        for proj in ("gate_proj", "up_proj", "down_proj"):
            rules += _dense(ours + ("mlp", proj), f"{hf}.mlp.{proj}", bias=False)
    rules.append(_norm(("norm",), "model.norm"))
    if not config.tie_word_embeddings:
        rules += _dense(("lm_head",), "lm_head", bias=False)
    return rules


def alternative_names(hf_name: str) -> list[str]:
    """The hub name and the in-memory names newer transformers use (`model.visual.*`, `model.language_model.*`)."""
    if hf_name.startswith("visual."):
        return [hf_name, "model." + hf_name]
    if hf_name.startswith("model."):
        return [hf_name, "model.language_model." + hf_name[len("model.") :]]
    return [hf_name]


def expected_hf_shape(rule: TensorRule, our_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The HF shape for `rule`, with conv kernels flattened.

    Args:
      rule: the tensor rule.
      our_shape: the shape of our parameter.

    Returns:
      `[prod(out), prod(in)]` for a kernel, our shape for the embedding table, and `[prod(our_shape)]` for the
      other "reshape" tensors.
    """
    if rule.kind == "kernel":
        return (int(np.prod(our_shape[rule.n_in :])), int(np.prod(our_shape[: rule.n_in])))
    if rule.path[-1] == "embedding":
        return tuple(our_shape)
    return (int(np.prod(our_shape)),)


def hf_to_ours(rule: TensorRule, tensor: np.ndarray, our_shape: tuple[int, ...]) -> np.ndarray:
    """Converts an HF tensor to our layout.

    Args:
      rule: the tensor rule.
      tensor: the HF tensor as stored (a conv kernel may keep its unflattened shape).
      our_shape: the shape of our parameter.

    Returns:
      The values in `our_shape`, in the tensor's dtype.

    Raises:
      ValueError: naming the tensor when its shape does not match `expected_hf_shape`.
    """
    found = tensor.reshape(tensor.shape[0], -1).shape if rule.kind == "kernel" and tensor.ndim >= 2 else tensor.shape
    expected = expected_hf_shape(rule, our_shape)
    if tuple(found) != expected:
        raise ValueError(f"tensor {rule.hf_name!r}: expected shape {expected}, found {tuple(tensor.shape)}")
    if rule.kind == "kernel":
        return np.ascontiguousarray(tensor.reshape(found).T).reshape(our_shape)
    return tensor.reshape(our_shape)


def ours_to_hf(rule: TensorRule, value: np.ndarray, hf_full_shape: tuple[int, ...]) -> np.ndarray:
    """Converts one of our parameters back to the HF layout.

    Args:
      rule: the tensor rule.
      value: the parameter's values in our shape.
      hf_full_shape: the HF shape to produce (e.g. the unflattened Conv3d shape of the patch embedding).

    Returns:
      The values in `hf_full_shape`.
    """
    if rule.kind == "kernel":
        n_in = int(np.prod(value.shape[: rule.n_in]))
        return np.ascontiguousarray(value.reshape(n_in, -1).T).reshape(hf_full_shape)
    return value.reshape(hf_full_shape)


def rules_with_variables(variables: dict, config: Qwen25VLConfig) -> list[tuple[TensorRule, object]]:
    """Pairs every tensor rule with the variable at its path.

    Args:
      variables: path -> variable, e.g. from `nnx.to_flat_state`.
      config: the model config the variables belong to.

    Returns:
      (rule, variable) pairs in `tensor_rules` order.

    Raises:
      ValueError: naming any parameter that has no HF name.
    """
    rules = tensor_rules(config)
    unmapped = set(variables) - {r.path for r in rules}
    if unmapped:
        raise ValueError(f"internal: parameters without an HF name: {sorted(unmapped)}")
    return [(rule, variables[rule.path]) for rule in rules]
