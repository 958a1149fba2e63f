"""Validation: mean accuracy over n samples at the validation temperature, greedy accuracy, a per-data-source
breakdown, and a few sample generations written to `eval_samples.jsonl` in the workdir."""

from __future__ import annotations

import collections
import json

import jax
import numpy as np

from shuffle_r1_jax.data.pipeline import PipelineConfig, prompt_batches
from shuffle_r1_jax.sampling import Sampler, SamplingConfig
from shuffle_r1_jax.train.rollout import generate_and_score


class Evaluator:
    """Runs the validation set through the sampler; `evaluate(params, step)` returns `val/...` metrics."""

    def __init__(self, trainer, val_data: str, columns, stop_ids, forbidden, pad_id: int):
        c = trainer.config
        self.trainer, self.val_data, self.columns = trainer, val_data, columns
        self.n = c.eval.n
        self.max_prompts = c.eval.max_prompts
        self.num_examples = c.eval.num_examples
        common = dict(stop_token_ids=stop_ids, forbidden_token_ids=forbidden, pad_token_id=pad_id)
        self.sampled = Sampler(trainer.graphdef, SamplingConfig(temperature=c.eval.temperature, top_p=1.0, **common))
        self.greedy = Sampler(trainer.graphdef, SamplingConfig(temperature=0.0, **common))
        self.samples_file = trainer.workdir / "eval_samples.jsonl"

    def _batches(self):
        t = self.trainer
        return prompt_batches(
            self.val_data, t.encoder, t.model_config,
            PipelineConfig(batch_size=t.run.prompts_per_process, seed=0, shuffle=False, num_epochs=1,
                           drop_remainder=False, process_index=jax.process_index(), process_count=jax.process_count()),
            buckets=t.buckets, columns=self.columns,
        )  # fmt: skip

    def evaluate(self, params, step: int) -> dict[str, float]:
        t, c = self.trainer, self.trainer.config
        accuracy, greedy_accuracy, by_source = [], [], collections.defaultdict(list)
        examples, seen = [], 0
        batches = self._batches()
        for index, batch in enumerate(batches):
            if self.max_prompts and seen >= self.max_prompts:
                break
            seen += batch.batch_size
            key = jax.random.fold_in(jax.random.key(c.seed + 1), index)
            for sampler, n, out in ((self.sampled, self.n, accuracy), (self.greedy, 1, greedy_accuracy)):
                scored = generate_and_score(
                    sampler, params, batch, n=n, max_new_tokens=c.rollout.max_new_tokens, key=key,
                    tokenizer=t.tokenizer, reward_pool=t.reward_pool, reward_timeout_s=c.reward.timeout_s,
                )  # fmt: skip
                part = scored.parts.get("accuracy", scored.parts["overall"])
                out.append(part)
                if sampler is self.sampled:
                    for i, source in enumerate(batch.data_sources):
                        by_source[source].append(part[i * n : (i + 1) * n])
                    for i in range(min(self.num_examples - len(examples), batch.batch_size)):
                        examples.append({"step": step, "problem": batch.problems[i], "answer": batch.answers[i],
                                         "response": scored.responses[i * n], "score": float(part[i * n])})  # fmt: skip
        if not accuracy:
            raise RuntimeError(f"the validation set {self.val_data!r} gave no usable prompt (data counts: {batches.counts()})")
        metrics = {"val/accuracy": float(np.mean(np.concatenate(accuracy))),
                   "val/greedy_accuracy": float(np.mean(np.concatenate(greedy_accuracy)))}  # fmt: skip
        metrics.update({f"val/accuracy/{s}": float(np.mean(np.concatenate(v))) for s, v in by_source.items()})
        if jax.process_index() == 0:
            with open(self.samples_file, "a") as f:
                for example in examples:
                    f.write(json.dumps(example) + "\n")
        return metrics
