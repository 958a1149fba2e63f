"""Session fixtures: the tiny checkpoint and the synthetic dataset."""

from tests.tiny_assets import synthetic_data, tiny_checkpoint  # noqa: F401
