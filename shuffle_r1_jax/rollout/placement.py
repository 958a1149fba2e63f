"""A process's prompt batch and rollout rows placed as global arrays on the mesh (and read back).

Every process collates its own prompts, so the shapes can differ between processes (prompt length bucket, image
rows, patches per image row). `BatchPlacer.prompts` first agrees on the largest of each over the processes and
pads to it (prompts on the left, image rows with invalid patches, exactly as the collation pads within a batch),
then places each field with its rows sharded over the batch axes. Image-token slots index the flattened merged
tokens of the whole (global) vision batch, so a process's slots are re-pointed at the global rows its images
land on.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

from shuffle_r1_jax.models.qwen2_5_vl.model import ModelInputs, VisionInputs
from shuffle_r1_jax.parallel import global_arrays as ga
from shuffle_r1_jax.processing.batch import pad_left


class BatchPlacer:
    """Places this process's batches on `mesh` (rows over the batch axes) and reads its rows back.

    Attributes:
      mesh: the device mesh.
      pad_id: the prompt padding token.
      merge: image patches per merged (LLM) token, spatial_merge_size ** 2.
      processes: the number of JAX processes.
    """

    def __init__(self, mesh: Mesh, pad_id: int, merge: int):
        self.mesh, self.pad_id, self.merge = mesh, pad_id, merge
        self.processes = jax.process_count()
        self._shards_per_process = max(ga.batch_shard_count(mesh) // self.processes, 1)
        self._reshard: dict[tuple, object] = {}

    def rows(self, local: np.ndarray, axis: int = 0) -> jax.Array:
        """This process's rows as the global array of all processes' rows, sharded over the batch axes.

        Collective: every process passes a `local` of the same shape; `axis` is its row dimension.
        """
        return ga.host_to_global(local, self.mesh, axis)

    def local(self, x: jax.Array, axis: int = 0) -> np.ndarray:
        """This process's rows (dimension `axis`) of a global row-sharded array, as numpy."""
        return ga.local_rows(x, axis)

    def reshard_rows(self, tree):
        """`tree`'s arrays with rows (dimension 0) resharded over the batch axes.

        Rows that do not divide over the batch axes are replicated; arrays already sharded that way are copied
        unchanged. One compiled program per set of shapes.
        """
        leaves, treedef = jax.tree.flatten(tree)
        shardings = tuple(ga.batch_sharding(self.mesh, x.shape) for x in leaves)
        if shardings not in self._reshard:
            self._reshard[shardings] = jax.jit(lambda *xs: xs, out_shardings=shardings)
        return treedef.unflatten(self._reshard[shardings](*leaves))

    def prompts(self, local: ModelInputs) -> ModelInputs:
        """Global `ModelInputs` from this process's host batch (collective; see the module docstring).

        Args:
          local: this process's prompts as numpy `ModelInputs`, image slots into its own image rows.

        Returns:
          `ModelInputs` of global arrays, rows sharded over the batch axes, image slots into the global image rows.
        """
        local = jax.tree.map(np.asarray, local)
        vision = local.vision
        dims = (
            local.input_ids.shape[1],
            0 if vision is None else vision.patches.shape[0],
            0 if vision is None else vision.patches.shape[1],
            0 if vision is None else vision.patches.shape[2],
        )
        length, image_rows, width, patch_dim = ga.max_over_processes(dims)
        if self.processes > 1:
            image_rows = -(-image_rows // self._shards_per_process) * self._shards_per_process
        ids = pad_left(local.input_ids, length, self.pad_id)
        mask = pad_left(local.attention_mask, length, 0)
        positions = pad_left(local.position_ids, length, 0)
        if patch_dim == 0:
            return ModelInputs(self.rows(ids), self.rows(mask), self.rows(positions, 1), self.rows(local.rope_deltas))
        vision, slots = self._pad_vision(local, length, image_rows, width, patch_dim)
        return ModelInputs(
            self.rows(ids),
            self.rows(mask),
            self.rows(positions, 1),
            self.rows(local.rope_deltas),
            vision=jax.tree.map(self.rows, vision),
            vision_token_slot=self.rows(slots),
        )

    def _pad_vision(self, local: ModelInputs, length: int, image_rows: int, width: int, patch_dim: int):
        """Vision rows padded to (image_rows, width), and slots re-pointed at the global rows of this process's images.

        Returns:
          (numpy `VisionInputs` of `image_rows` rows of `width` patches, image slots `int32[B, length]`).
        """
        vision = local.vision or VisionInputs(
            np.zeros((0, width, patch_dim), np.float32), np.zeros((0, width, 2), np.int32), np.zeros((0, width), bool)
        )
        slots = (
            np.full(local.input_ids.shape, -1, np.int32) if local.vision_token_slot is None else local.vision_token_slot
        )
        extra = ((0, image_rows - vision.patches.shape[0]), (0, width - vision.patches.shape[1]))
        vision = VisionInputs(
            np.pad(vision.patches, extra + ((0, 0),)),
            np.pad(vision.patch_pos, extra + ((0, 0),)),
            np.pad(vision.patch_valid, extra),
        )
        old_row = max(local.vision.patches.shape[1] // self.merge, 1) if local.vision is not None else 1
        new_row = width // self.merge
        global_rows = ga.local_row_ids(
            ga.batch_sharding(self.mesh, (image_rows * self.processes,)), (image_rows * self.processes,)
        )
        slots = np.where(slots >= 0, global_rows[np.maximum(slots, 0) // old_row] * new_row + slots % old_row, -1)
        return vision, pad_left(slots.astype(np.int32), length, -1)
