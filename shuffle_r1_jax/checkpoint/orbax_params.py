"""Model parameters as an orbax checkpoint: `<dir>/params` (arrays, shardable) next to the HF non-weight files.

`scripts/convert_hf_to_orbax.py` loads an HF directory tensor by tensor (`load_pretrained`) into (optionally
sharded) device arrays and writes them with `save_params`; `restore_params` reads them back onto given shardings.
`load_pretrained` accepts such a directory like an HF one, so the trainer can start from either;
`scripts/export_to_hf.py` writes one back in the HF layout, each tensor in its saved dtype (`keep_saved_dtypes`).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import orbax.checkpoint as ocp

PARAMS_DIR = "params"


def is_orbax_params_dir(path: str | os.PathLike) -> bool:
    """Whether `path` holds a converted checkpoint (`params/` written by `save_params`)."""
    return (Path(path) / PARAMS_DIR).is_dir()


def save_params(params: dict, out_dir: str | os.PathLike) -> None:
    """Writes parameters to `<out_dir>/params` (replaced if present) and waits until the write is complete.

    Args:
      params: a pure dict of (possibly sharded) arrays.
      out_dir: the checkpoint directory.
    """
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(out_dir).absolute() / PARAMS_DIR, params, force=True)
    checkpointer.wait_until_finished()


def restore_params(directory: str | os.PathLike, abstract: dict, *, keep_saved_dtypes: bool = False) -> dict:
    """Reads `<directory>/params` onto `abstract`.

    Args:
      directory: the checkpoint directory.
      abstract: a pure dict of `ShapeDtypeStruct`s, with `.sharding` to place them.
      keep_saved_dtypes: restore each array in the dtype it was saved in (e.g. bfloat16) instead of casting it to
        `abstract`'s dtype.

    Returns:
      A pure dict of the restored arrays, structured like `abstract` and placed by its shardings, in `abstract`'s
      dtypes (with `keep_saved_dtypes`, the saved ones).

    Raises:
      ValueError: naming a parameter of `abstract` that is missing from the checkpoint or whose saved shape
        differs.
    """
    checkpointer = ocp.StandardCheckpointer()
    path = Path(directory).absolute() / PARAMS_DIR
    saved = {_name(k): v for k, v in jax.tree_util.tree_flatten_with_path(checkpointer.metadata(path).item_metadata)[0]}
    for key, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        name = _name(key)
        found = saved.get(name)
        if found is None or tuple(found.shape) != tuple(leaf.shape):
            raise ValueError(
                f"{path}: parameter {name!r} expected shape {tuple(leaf.shape)}, found "
                f"{'nothing' if found is None else tuple(found.shape)}"
            )
    if keep_saved_dtypes:
        abstract = jax.tree_util.tree_map_with_path(
            lambda key, leaf: jax.ShapeDtypeStruct(leaf.shape, saved[_name(key)].dtype, sharding=leaf.sharding),
            abstract,
        )
    return checkpointer.restore(path, abstract)


def _name(path) -> str:
    """A tree path as "a/0/b" (orbax stores integer dict keys as strings)."""
    return "/".join(str(getattr(k, "key", k)) for k in path)
