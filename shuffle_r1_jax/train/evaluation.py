"""Validation: mean accuracy over n samples at the validation temperature, greedy accuracy, a per-data-source
breakdown, and a few sample generations written to `eval_samples.jsonl` in the workdir."""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path
from typing import Callable, Iterator

import jax
import numpy as np

from shuffle_r1_jax.parallel.global_arrays import allgather_json, max_over_processes
from shuffle_r1_jax.processing.batch import PromptBatch
from shuffle_r1_jax.rollout.generate import RolloutGenerator
from shuffle_r1_jax.train.settings import EvalSettings


class Evaluator:
    """Runs the validation set through two rollout generators; `evaluate(params, step)` returns `val/...` metrics.

    Every process evaluates its share of the validation set; the sampler calls are collective, so the processes
    run the same number of batches of the same size: a process whose share ran out repeats its last batch, a
    short last batch repeats its last prompt, and repeated prompts carry no weight in the metrics, which are
    summed over processes.

    Args:
      settings: the `eval` settings.
      batches: makes a fresh pass over this process's share of the validation set (an iterator of prompt
        batches of at most `batch_size` prompts with a `counts()` of skipped records).
      batch_size: prompts per process per batch (every sampler call takes this many).
      sampled: the generator at the validation temperature, `settings.n` samples per prompt.
      greedy: the greedy generator, one sample per prompt.
      key: a replicated PRNG key; batch i samples with `fold_in(key, i)` (the same stream at every validation).
      samples_file: where process 0 appends `settings.num_examples` sample generations per validation.
      source: the validation dataset spec, for messages.
    """

    def __init__(
        self,
        settings: EvalSettings,
        batches: Callable[[], Iterator[PromptBatch]],
        batch_size: int,
        sampled: RolloutGenerator,
        greedy: RolloutGenerator,
        key: jax.Array,
        samples_file: Path,
        source: str,
    ):
        self.settings = settings
        self.batches = batches
        self.batch_size = batch_size
        self.sampled = sampled
        self.greedy = greedy
        self.key = key
        self.samples_file = samples_file
        self.source = source

    def _aligned_batches(self):
        """Yields (batch of exactly `batch_size` prompts, how many of them count) until every process is done.

        Raises:
          RuntimeError: this process got no usable validation prompt at all.
        """
        seen, last = 0, None
        batches = self.batches()
        max_prompts = self.settings.max_prompts
        while True:
            done = max_prompts and seen * jax.process_count() >= max_prompts
            batch = None if done else next(batches, None)
            if max_over_processes([batch is not None])[0] == 0:
                return
            if batch is None and last is None:
                raise RuntimeError(
                    f"process {jax.process_index()} got no usable prompt of {self.source!r} (data counts: "
                    f"{batches.counts()}); use fewer processes or more validation data"
                )
            weight = 0 if batch is None else batch.batch_size
            batch = last if batch is None else repeat_last_prompt(batch, self.batch_size)
            seen += weight
            last = batch
            yield batch, weight

    def evaluate(self, params, step: int) -> dict[str, float]:
        """Validates `params` over all processes' prompts; process 0 appends the sample generations.

        Args:
          params: the policy's parameters.
          step: the training step, recorded with the sample generations.

        Returns:
          `val/accuracy` (the "accuracy" reward part, else "overall", mean over the n samples),
          `val/greedy_accuracy` and `val/accuracy/<data source>`, floats.

        Raises:
          RuntimeError: the validation set gave no usable prompt.
        """
        sums: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])  # name -> [sum, count]
        examples = []
        for index, (batch, weight) in enumerate(self._aligned_batches()):
            key = jax.random.fold_in(self.key, index)
            for generate, name in ((self.sampled, "val/accuracy"), (self.greedy, "val/greedy_accuracy")):
                n = generate.n
                scored = generate(params, batch, key)
                part = scored.parts.get("accuracy", scored.parts["overall"])[: weight * n]
                _add(sums, name, part)
                if generate is not self.sampled:
                    continue
                for i, source in enumerate(batch.data_sources[:weight]):
                    _add(sums, f"val/accuracy/{source}", part[i * n : (i + 1) * n])
                for i in range(min(self.settings.num_examples - len(examples), weight)):
                    examples.append(
                        {
                            "step": step,
                            "problem": batch.problems[i],
                            "answer": batch.answers[i],
                            "response": scored.responses[i * n],
                            "score": float(part[i * n]),
                        }
                    )
        totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
        for process_sums in allgather_json(dict(sums)):
            for name, (total, count) in process_sums.items():
                totals[name][0] += total
                totals[name][1] += count
        if not totals["val/accuracy"][1]:
            raise RuntimeError(f"the validation set {self.source!r} gave no usable prompt")
        if jax.process_index() == 0:
            with open(self.samples_file, "a") as f:
                for example in examples:
                    f.write(json.dumps(example) + "\n")
        return {name: total / count for name, (total, count) in totals.items() if count}


def _add(sums: dict, name: str, values: np.ndarray) -> None:
    """Adds the sum and the count of `values` to `sums[name]`."""
    sums[name][0] += float(np.sum(values))
    sums[name][1] += float(len(values))


def repeat_last_prompt(batch: PromptBatch, size: int) -> PromptBatch:
    """`batch` grown to `size` prompts by repeating its last prompt (its image slots point at the same images)."""
    extra = size - batch.batch_size
    if extra == 0:
        return batch
    take = np.concatenate([np.arange(batch.batch_size), np.full(extra, batch.batch_size - 1)])
    fields = ("problems", "answers", "data_sources", "record_ids", "reward_contexts")
    return dataclasses.replace(
        batch,
        inputs=batch.inputs.take_rows(take),
        prompt_lengths=batch.prompt_lengths[take],
        record_indices=batch.record_indices[take],
        **{f: tuple(getattr(batch, f)[i] for i in take) for f in fields},
    )
