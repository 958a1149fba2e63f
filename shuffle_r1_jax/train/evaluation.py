"""Validation: mean accuracy over n samples at the validation temperature, greedy accuracy, a per-data-source
breakdown, and a few sample generations written to `eval_samples.jsonl` in the workdir."""

from __future__ import annotations

import collections
import dataclasses
import json

import jax
import numpy as np

from shuffle_r1_jax.data.pipeline import PipelineConfig, prompt_batches
from shuffle_r1_jax.parallel.global_arrays import allgather_json, max_over_processes
from shuffle_r1_jax.processing.batch import PromptBatch
from shuffle_r1_jax.sampling import Sampler, SamplingConfig
from shuffle_r1_jax.train.rollout import generate_and_score


class Evaluator:
    """Runs the validation set through the sampler; `evaluate(params, step)` returns `val/...` metrics.

    Every process evaluates its share of the validation set (`PipelineConfig.process_index`); the sampler calls
    are collective, so the processes run the same number of batches of the same size: a process whose share
    ran out repeats its last batch, a short last batch repeats its last prompt, and repeated prompts carry no
    weight in the metrics, which are summed over processes.
    """

    def __init__(self, trainer, val_data: str, columns, stop_ids, forbidden, pad_id: int):
        c = trainer.config
        self.trainer, self.val_data, self.columns = trainer, val_data, columns
        self.n = c.eval.n
        self.max_prompts = c.eval.max_prompts
        self.num_examples = c.eval.num_examples
        common = dict(stop_token_ids=stop_ids, forbidden_token_ids=forbidden, pad_token_id=pad_id)
        self.sampled = Sampler(trainer.graphdef, SamplingConfig(temperature=c.eval.temperature, top_p=1.0, **common),
                               mesh=trainer.mesh)  # fmt: skip
        self.greedy = Sampler(trainer.graphdef, SamplingConfig(temperature=0.0, **common), mesh=trainer.mesh)
        self.samples_file = trainer.workdir / "eval_samples.jsonl"

    def _batches(self):
        t = self.trainer
        return prompt_batches(
            self.val_data, t.encoder, t.model_config,
            PipelineConfig(batch_size=t.run.prompts_per_process, seed=0, shuffle=False, num_epochs=1,
                           drop_remainder=False, process_index=jax.process_index(), process_count=jax.process_count()),
            buckets=t.buckets, columns=self.columns,
        )  # fmt: skip

    def _aligned_batches(self):
        """(batch of exactly prompts_per_process prompts, how many of them count) until every process is done."""
        size, seen, last = self.trainer.run.prompts_per_process, 0, None
        batches = self._batches()
        while True:
            done = self.max_prompts and seen * jax.process_count() >= self.max_prompts
            batch = None if done else next(batches, None)
            if max_over_processes([batch is not None])[0] == 0:
                return
            if batch is None and last is None:
                raise RuntimeError(f"process {jax.process_index()} got no usable prompt of {self.val_data!r} "
                                   f"(data counts: {batches.counts()}); use fewer processes or more validation data")  # fmt: skip
            weight = 0 if batch is None else batch.batch_size
            batch = last if batch is None else _repeat_last_prompt(batch, size)
            seen += weight
            last = batch
            yield batch, weight

    def evaluate(self, params, step: int) -> dict[str, float]:
        t, c = self.trainer, self.trainer.config
        sums: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])  # name -> [sum, count]
        examples = []
        base_key = t.replicated_key(jax.random.key(c.seed + 1))
        for index, (batch, weight) in enumerate(self._aligned_batches()):
            key = jax.random.fold_in(base_key, index)
            for sampler, n, name in ((self.sampled, self.n, "val/accuracy"), (self.greedy, 1, "val/greedy_accuracy")):
                scored = generate_and_score(
                    sampler, params, batch, n=n, max_new_tokens=c.rollout.max_new_tokens, key=key,
                    tokenizer=t.tokenizer, reward_pool=t.reward_pool, reward_timeout_s=c.reward.timeout_s,
                    placer=t.placer, prompts_per_call=t.run.prompts_per_sampler_call,
                )  # fmt: skip
                part = scored.parts.get("accuracy", scored.parts["overall"])[: weight * n]
                _add(sums, name, part)
                if sampler is self.sampled:
                    for i, source in enumerate(batch.data_sources[:weight]):
                        _add(sums, f"val/accuracy/{source}", part[i * n : (i + 1) * n])
                    for i in range(min(self.num_examples - len(examples), weight)):
                        examples.append({"step": step, "problem": batch.problems[i], "answer": batch.answers[i],
                                         "response": scored.responses[i * n], "score": float(part[i * n])})  # fmt: skip
        totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
        for process_sums in allgather_json(dict(sums)):
            for name, (total, count) in process_sums.items():
                totals[name][0] += total
                totals[name][1] += count
        if not totals["val/accuracy"][1]:
            raise RuntimeError(f"the validation set {self.val_data!r} gave no usable prompt")
        if jax.process_index() == 0:
            with open(self.samples_file, "a") as f:
                for example in examples:
                    f.write(json.dumps(example) + "\n")
        return {name: total / count for name, (total, count) in totals.items() if count}


def _add(sums: dict, name: str, values: np.ndarray) -> None:
    sums[name][0] += float(np.sum(values))
    sums[name][1] += float(len(values))


def _repeat_last_prompt(batch: PromptBatch, size: int) -> PromptBatch:
    """`batch` grown to `size` prompts by repeating its last prompt (its image slots point at the same images)."""
    extra = size - batch.batch_size
    if extra == 0:
        return batch
    take = np.concatenate([np.arange(batch.batch_size), np.full(extra, batch.batch_size - 1)])
    inputs = batch.inputs
    inputs = dataclasses.replace(
        inputs,
        input_ids=inputs.input_ids[take], attention_mask=inputs.attention_mask[take],
        position_ids=inputs.position_ids[:, take], rope_deltas=inputs.rope_deltas[take],
        image_token_slot=None if inputs.image_token_slot is None else inputs.image_token_slot[take],
    )  # fmt: skip
    return dataclasses.replace(
        batch, inputs=inputs, prompt_lengths=batch.prompt_lengths[take],
        **{f: tuple(getattr(batch, f)[i] for i in take) for f in ("problems", "answers", "data_sources", "record_ids")},
    )  # fmt: skip
