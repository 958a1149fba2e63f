"""The evaluation room: a checkpoint evaluated on a dataset outside training, as the trainer validates.

- `run`: the evaluation's settings (the training config with a checkpoint and a dataset), the trainer's validation
  over them, and the files it writes (every sample, the greedy responses, a summary);
- `records`: the sample rows collected from the validation's scored batches, written as JSONL;
- `figures`: mean@n, unbiased pass@k, greedy accuracy and response-length statistics, overall and per data source.

Entrypoint: `python -m shuffle_r1_jax.evaluate --checkpoint DIR --data PATH@SPLIT [--config FILE[:args]]
[--config.key=value ...] [--out DIR]`.
"""
