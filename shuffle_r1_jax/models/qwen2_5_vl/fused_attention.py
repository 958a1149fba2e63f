"""Fused attention kernels for `attention.dot_product_attention`: "tokamax" (GPU) and "splash" (TPU).

Shapes as in `attention.dot_product_attention`: q `[B, S, N, Dh]`, k and v `[B, T, K, Dh]` (N a multiple of K,
query head h reads key/value head h // (N / K)), mask `bool[B, S or 1, T]`; the output is `q.dtype[B, S, N, Dh]`.

  tokamax  `tokamax.dot_product_attention`, an optional dependency (`pip install -e ".[kernels]"`). tokamax picks
           its best kernel for the backend (Pallas Mosaic flash attention on Hopper and Blackwell GPUs and on TPU,
           Pallas Triton on other GPUs) and falls back to its own XLA implementation where every kernel refuses the
           inputs: on CPU, and on TPU for our per-row masks (its TPU kernel takes one mask for the whole batch).
           The dense mask goes in as it is, so any mask is exact.
  splash   JAX's block-sparse Pallas TPU flash attention (`jax.experimental.pallas.ops.tpu.splash_attention`): a
           static mask (full or causal) and per-token segment ids (a query sees a key of the same segment). The
           dense mask is translated, which covers the masks the model makes:
             * key-only masks `[B, 1, T]` (the vision tower's padding slots), exactly: queries are segment 1, keys
               are segment 1 where valid and 0 elsewhere;
             * square masks `[B, S, S]` that are causal within segments: `tril & key_valid[:, None, :]` for any
               left or right padding (`text.causal_mask`) and packed rows of several sequences
               (`text.segment_causal_mask`): causal mask, a query's segment 1 + the first key it sees (0 when it
               sees none), a key's segment its own as a query where it sees itself (else 0). The translation is
               checked on the device: a batch row whose mask is not of that form comes out NaN (the trainer's
               non-finite check stops), never silently wrong.
           Other shapes (a block of queries over a longer KV cache, fewer than `SPLASH_MIN_LENGTH` queries) are not
           splash's; `attention.py` computes them with its "chunked" path. Off TPU the kernel runs in Pallas'
           interpret mode (slow: for tests).

A query whose mask row is empty gets a finite output that means nothing, like the "xla" path's (which averages
all values): tokamax's XLA implementation gives exactly that average, splash attends that row's masked keys of
its own segment instead.

Under a device mesh (`jax.set_mesh`, as the trainer traces its programs) both kernels run inside `shard_map`, the
batch over the mesh's batch axes and the heads over "tensor" where those sizes divide (else that dimension is
whole on every device): a Pallas kernel is opaque to XLA's SPMD partitioner, which would otherwise gather the
whole batch on every device.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec

from shuffle_r1_jax.parallel.sharding import BATCH_AXES

SPLASH_MIN_LENGTH = 128  # the kernel's smallest block; shorter query sequences use the "chunked" path
_SPLASH_BLOCKS = (512, 256, 128)  # block sizes tried, largest first, on sequences padded to a multiple of 128
# every block size of the forward and backward kernels: one square block for all
_SPLASH_BLOCK_FIELDS = (
    "block_q",
    "block_kv",
    "block_kv_compute",
    "block_q_dkv",
    "block_kv_dkv",
    "block_kv_dkv_compute",
    "block_q_dq",
    "block_kv_dq",
)
TOKAMAX_INSTALL = 'pip install -e ".[kernels]"'


def tokamax_available() -> bool:
    """Whether the optional `tokamax` package is installed."""
    return importlib.util.find_spec("tokamax") is not None


def tokamax_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, scale: float) -> jax.Array:
    """`tokamax.dot_product_attention` under the dense mask (module docstring); shapes as there.

    Raises:
      ImportError: tokamax is not installed (the message says how to install it).
    """
    if not tokamax_available():
        raise ImportError(f'attention implementation "tokamax" needs the tokamax package: {TOKAMAX_INSTALL}')
    import tokamax
    from absl import flags

    # tokamax reads its options from absl flags and would parse sys.argv itself (a pytest or any non-absl command
    # line fails there); unparsed flags keep their defaults
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()

    def attend(q, k, v, mask):
        out = tokamax.dot_product_attention(q, k, v, mask=mask[:, None], scale=scale)
        return out.astype(q.dtype)

    return _sharded(attend, q, k, v, mask)


def splash_supports(q: jax.Array, k: jax.Array, mask: jax.Array) -> bool:
    """Whether `splash_attention` takes these shapes: `SPLASH_MIN_LENGTH` or more queries, and a key-only mask or
    a square (self-attention) one."""
    q_len, k_len = q.shape[1], k.shape[1]
    return q_len >= SPLASH_MIN_LENGTH and (mask.shape[1] == 1 or q_len == k_len)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, scale: float) -> jax.Array:
    """Splash attention under the mask's translation to a static mask and segment ids (module docstring).

    Raises:
      ValueError: `splash_supports` is False for these shapes.
    """
    if not splash_supports(q, k, mask):
        raise ValueError(
            f"splash attention takes >= {SPLASH_MIN_LENGTH} queries and a key-only or square mask; got q "
            f"{q.shape}, k {k.shape}, mask {mask.shape}"
        )
    return _sharded(functools.partial(_splash_local, scale=scale), q, k, v, mask)


def _splash_local(q, k, v, mask, *, scale):
    """Splash attention on one device's shard (shapes as `splash_attention`'s, local sizes)."""
    batch, q_len, heads, head_dim = q.shape
    key_only = mask.shape[1] == 1
    if key_only:
        q_segment = jnp.ones((batch, q_len), jnp.int32)
        kv_segment = mask[:, 0].astype(jnp.int32)
    else:  # a query's segment: 1 + the first key it sees; a key's: its own as a query, where it sees itself
        q_segment = jnp.where(mask.any(axis=2), jnp.argmax(mask, axis=2) + 1, 0).astype(jnp.int32)
        kv_segment = jnp.where(jnp.diagonal(mask, axis1=1, axis2=2), q_segment, 0)
    length = -(-q_len // SPLASH_MIN_LENGTH) * SPLASH_MIN_LENGTH
    pad = length - q_len

    def padded(x):
        return jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))

    # the kernel's layout: heads before positions; the scale goes into the queries
    q_heads = jnp.swapaxes(padded(q * jnp.asarray(scale, q.dtype)), 1, 2)
    k_heads, v_heads = (jnp.swapaxes(padded(x), 1, 2) for x in (k, v))
    block = next(b for b in _SPLASH_BLOCKS if length % b == 0)
    shape = (length, length)
    static = splash.FullMask(shape) if key_only else splash.CausalMask(shape)
    kernel = splash.make_splash_mha(
        splash.MultiHeadMask([static] * heads),
        block_sizes=splash.BlockSizes(**dict.fromkeys(_SPLASH_BLOCK_FIELDS, block)),
        head_shards=1,
        q_seq_shards=1,
        interpret=jax.default_backend() != "tpu",
    )

    def one_row(qr, kr, vr, q_seg, kv_seg):
        return kernel(qr, kr, vr, segment_ids=splash.SegmentIds(q=q_seg, kv=kv_seg))

    out = jax.vmap(one_row)(q_heads, k_heads, v_heads, padded(q_segment), padded(kv_segment))
    out = jnp.swapaxes(out, 1, 2)[:, :q_len].astype(q.dtype)
    if key_only:
        return out
    # the causal translation is exact only for masks tril & same segment: NaN for a batch row that is not one
    same = (q_segment[:, :, None] == kv_segment[:, None, :]) & (kv_segment > 0)[:, None, :]
    translated = jnp.tril(jnp.ones((q_len, q_len), bool))[None] & same
    exact = jnp.all((mask == translated) | (q_segment[:, :, None] == 0), axis=(1, 2))
    return jnp.where(exact[:, None, None, None], out, jnp.nan)


def _sharded(attend, q, k, v, mask):
    """`attend(q, k, v, mask)` inside `shard_map` over the context mesh (module docstring), or as it is without one."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(BATCH_AXES) | {"tensor"} <= set(mesh.axis_names):
        return attend(q, k, v, mask)
    rows = BATCH_AXES if q.shape[0] % math.prod(mesh.shape[a] for a in BATCH_AXES) == 0 else None
    heads = "tensor" if q.shape[2] % mesh.shape["tensor"] == 0 and k.shape[2] % mesh.shape["tensor"] == 0 else None
    qkv = PartitionSpec(rows, None, heads, None)
    return jax.shard_map(
        attend,
        mesh=mesh,
        in_specs=(qkv, qkv, qkv, PartitionSpec(rows, None, None)),
        out_specs=qkv,
        check_vma=False,
    )(q, k, v, mask)
