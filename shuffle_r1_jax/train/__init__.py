"""The orchestration room: everything that turns a config into a training run.

- `defaults`: every config key with its default and meaning, and the parser of config-file arguments;
- `settings`: the config checked and resolved once into typed settings, and the start-up order of a run;
- `stages`: stages and the response-length schedule cut into phases (which values hold at which steps);
- `components`: the prompt encoder, starting policy, prompt stream, reward pool and rollout generator of a run;
- `programs`: the jitted programs of a training step, built in one place from the settings;
- `trainer`: the loop (rollouts, update-batch selection, policy updates) around validation, checkpoints and
  metrics, resuming from the workdir's checkpoint;
- `evaluation`: validation accuracy (sampled and greedy) and sample generations, built in one place for the trainer
  and `python -m shuffle_r1_jax.evaluate`;
- `export`: a trainer checkpoint written as a Hugging Face model directory (the workdir keeps the starting
  checkpoint's non-weight files in `checkpoints/hf_source/` for it);
- `metric_writers`: the JSONL log, TensorBoard scalars, console line and progress bar.
- `cli`: what the command lines share: the default config, the user errors, the run log, the one-line report.

Entrypoint: `python -m shuffle_r1_jax.train --config configs/<name>.py [--config.key=value ...] [--workdir DIR]`.
"""
