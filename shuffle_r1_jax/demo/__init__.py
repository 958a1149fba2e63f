"""Everything only the CPU demo (and the tests) need: a tiny tokenizer and random checkpoint in the Hugging Face
layout, the synthetic image tasks and their reward, the supervised warm-up of the starting policy, the demo's
config and the asset builder it names as its `setup` step. Nothing in the core rooms imports it."""
