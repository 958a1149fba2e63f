"""Validation: mean accuracy over n samples at the validation temperature, greedy accuracy, a per-data-source
breakdown, and a few sample generations written to `eval_samples.jsonl` in the workdir.

The trainer validates with `Evaluator.evaluate`; `python -m shuffle_r1_jax.evaluate` runs the same evaluator (built
by `Evaluator.build` from the same settings, seeded by `validation_key`) and reads every scored batch through
`evaluate`'s `on_batch`, so its figures are the trainer's for the same checkpoint, data and settings."""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path
from typing import Callable, Iterator

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from shuffle_r1_jax.parallel.global_arrays import allgather_json, max_over_processes, replicated_key
from shuffle_r1_jax.processing.batch import PromptBatch
from shuffle_r1_jax.processing.prompts import PromptEncoder
from shuffle_r1_jax.rewards.pool import RewardPool
from shuffle_r1_jax.rollout.generate import RolloutGenerator
from shuffle_r1_jax.rollout.placement import BatchPlacer
from shuffle_r1_jax.rollout.types import ScoredRollouts
from shuffle_r1_jax.train.components import prompt_stream, rollout_generator
from shuffle_r1_jax.train.programs import SpecialTokens, build_eval_samplers
from shuffle_r1_jax.train.settings import EvalSettings, RunSettings


class NoUsablePromptError(RuntimeError):
    """The validation set, or one process's share of it, gave no usable prompt; the message names the dataset."""


def validation_key(seed: int, mesh: Mesh) -> jax.Array:
    """The validation's PRNG key, `key(seed + 1)` (apart from the training stream's `key(seed)`), replicated over
    `mesh`; batch i of every validation samples with `fold_in(key, i)`."""
    return replicated_key(jax.random.key(seed + 1), mesh)


def accuracy_part(scored: ScoredRollouts) -> np.ndarray:
    """`float32[r]`: the reward's "accuracy" part of this process's rows, else its "overall" score."""
    return scored.parts.get("accuracy", scored.parts["overall"])


@dataclasses.dataclass(frozen=True)
class EvalBatch:
    """One validation batch, scored: what `Evaluator.evaluate` hands its `on_batch`.

    Attributes:
      index: the batch's position in the pass (its key is `fold_in(key, index)`).
      batch: this process's prompts, exactly `batch_size` of them (a short batch padded by repeating its last).
      weight: the leading prompts of `batch` that count (0 for a batch repeated by a process whose share ran out).
      sampled: the n samples per prompt at the validation temperature (this process's `batch_size * n` rows,
        prompt-major).
      greedy: the greedy sample of each prompt (`batch_size` rows).
    """

    index: int
    batch: PromptBatch
    weight: int
    sampled: ScoredRollouts
    greedy: ScoredRollouts


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
      samples_file: where process 0 appends `settings.num_examples` sample generations per validation (None:
        nowhere).
      source: the validation dataset spec, for messages.

    Attributes:
      data_counts: the prompt stream's counters after the last pass (`PromptBatchIterator.counts`: records read,
        unusable records by reason), empty before the first.
    """

    def __init__(
        self,
        settings: EvalSettings,
        batches: Callable[[], Iterator[PromptBatch]],
        batch_size: int,
        sampled: RolloutGenerator,
        greedy: RolloutGenerator,
        key: jax.Array,
        samples_file: Path | None,
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
        self.data_counts: dict[str, int] = {}

    @classmethod
    def build(
        cls,
        settings: RunSettings,
        *,
        graphdef: nnx.GraphDef,
        mesh: Mesh,
        tokens: SpecialTokens,
        image_features,
        placer: BatchPlacer,
        encoder: PromptEncoder,
        model_config: Qwen25VLConfig,
        pool: RewardPool,
        samples_file: Path | None,
    ) -> Evaluator:
        """The validation of `settings` over `data.val`: its own samplers (`build_eval_samplers`), `eval.n` samples
        per prompt and a greedy one, `rollout.max_new_tokens` and the reward limits of `settings`, keyed by
        `validation_key(seed)`; each pass reads `data.val` once in record order with `data`'s columns, prompt
        format, buckets and bad-record policy (`components.prompt_stream`).

        Args:
          settings: the run's settings (the trainer passes the whole run's, whatever the phase).
          graphdef: the policy's graph definition.
          mesh: the device mesh.
          tokens: the samplers' special tokens.
          image_features: the jitted vision program `(params, VisionInputs) -> features`.
          placer: puts prompts on the mesh.
          encoder: the prompt encoder of `data`'s prompt format (its tokenizer decodes the responses).
          model_config: the policy's model config.
          pool: the reward pool of `reward.name`.
          samples_file: see the class.
        """
        sampled, greedy = build_eval_samplers(settings, graphdef, mesh, tokens)

        def generator(sampler, n):
            return rollout_generator(settings, sampler, image_features, placer, encoder.tokenizer, pool, n)

        def batches():
            return prompt_stream(data, data.val, encoder, model_config, shuffle=False, seed=0, epochs=1)

        data = settings.data
        return cls(
            settings.eval,
            batches=batches,
            batch_size=settings.data.prompts_per_process,
            sampled=generator(sampled, settings.eval.n),
            greedy=generator(greedy, 1),
            key=validation_key(settings.seed, mesh),
            samples_file=samples_file,
            source=settings.data.val,
        )

    def _aligned_batches(self):
        """Yields (batch of exactly `batch_size` prompts, how many of them count) until every process is done.

        Raises:
          NoUsablePromptError: this process got no usable validation prompt at all.
        """
        seen, last = 0, None
        batches = self.batches()
        self.data_counts = {}
        max_prompts = self.settings.max_prompts
        while True:
            done = max_prompts and seen * jax.process_count() >= max_prompts
            batch = None if done else next(batches, None)
            if max_over_processes([batch is not None])[0] == 0:
                self.data_counts = batches.counts()
                return
            if batch is None and last is None:
                raise NoUsablePromptError(
                    f"process {jax.process_index()} got no usable prompt of {self.source!r} (data counts: "
                    f"{batches.counts()}); use fewer processes or more validation data"
                )
            weight = 0 if batch is None else batch.batch_size
            batch = last if batch is None else repeat_last_prompt(batch, self.batch_size)
            seen += weight
            last = batch
            yield batch, weight

    def evaluate(self, params, step: int, on_batch: Callable[[EvalBatch], None] | None = None) -> dict[str, float]:
        """Validates `params` over all processes' prompts; process 0 appends the sample generations.

        Args:
          params: the policy's parameters.
          step: the training step, recorded with the sample generations.
          on_batch: called with every scored batch, in order, on every process (each with its own rows).

        Returns:
          `val/accuracy` (the "accuracy" reward part, else "overall", mean over the n samples),
          `val/greedy_accuracy` and `val/accuracy/<data source>`, floats.

        Raises:
          NoUsablePromptError: the validation set gave no usable prompt.
        """
        sums: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])  # name -> [sum, count]
        examples = []
        for index, (batch, weight) in enumerate(self._aligned_batches()):
            key = jax.random.fold_in(self.key, index)
            sampled, greedy = self.sampled(params, batch, key), self.greedy(params, batch, key)
            n = self.sampled.n
            part = accuracy_part(sampled)[: weight * n]
            _add(sums, "val/accuracy", part)
            _add(sums, "val/greedy_accuracy", accuracy_part(greedy)[:weight])
            for i, source in enumerate(batch.data_sources[:weight]):
                _add(sums, f"val/accuracy/{source}", part[i * n : (i + 1) * n])
            for i in range(min(self.settings.num_examples - len(examples), weight)):
                examples.append(
                    {
                        "step": step,
                        "problem": batch.problems[i],
                        "answer": batch.answers[i],
                        "response": sampled.responses[i * n],
                        "score": float(part[i * n]),
                    }
                )
            if on_batch is not None:
                on_batch(EvalBatch(index, batch, weight, sampled, greedy))
        totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
        for process_sums in allgather_json(dict(sums)):
            for name, (total, count) in process_sums.items():
                totals[name][0] += total
                totals[name][1] += count
        if not totals["val/accuracy"][1]:
            raise NoUsablePromptError(f"the validation set {self.source!r} gave no usable prompt")
        if jax.process_index() == 0 and self.samples_file is not None:
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
