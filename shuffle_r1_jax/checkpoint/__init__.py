"""Checkpoints: Hugging Face safetensors <-> parameter trees, and orbax train-state save/restore."""
