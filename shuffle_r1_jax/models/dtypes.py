"""Dtype names as configs and command lines write them -> JAX dtypes (also NumPy dtypes: `np.dtype(DTYPES[name])`)."""

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
