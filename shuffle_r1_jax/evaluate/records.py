"""The sample rows of an evaluation: one per sampled response and one per greedy response, collected from the
evaluator's scored batches, gathered to process 0 and written as JSONL.

A row (one JSON object a line):
  prompt_index   int, the record's index in the dataset (files in order, rows in order)
  record_id      str, "<file> row <i>" / "<file> line <n>"
  data_source    str, the record's data source
  sample         int, the sample's index among its prompt's n (0 for the greedy one)
  answer         str, the reference answer
  response       str, the decoded response
  reward         float, the reward's overall score
  accuracy       float, the reward's "accuracy" part (else the overall score)
  length         int, response tokens
  truncated      bool, stopped at the length limit (`rollout.max_new_tokens`)
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from shuffle_r1_jax.parallel.global_arrays import allgather_json
from shuffle_r1_jax.rollout.placement import BatchPlacer
from shuffle_r1_jax.rollout.types import ScoredRollouts
from shuffle_r1_jax.sampling import FINISH_LENGTH
from shuffle_r1_jax.train.evaluation import EvalBatch, accuracy_part


class SampleRecorder:
    """Collects this process's rows of every batch (`__call__` is the evaluator's `on_batch`).

    Args:
      placer: the placer of the evaluator's generators (reads this process's rows of the response masks).

    Attributes:
      samples: the sampled rows, prompt-major.
      greedy: the greedy rows.
      reward_failures: reward failures by reason over both generators (padding rows included).
    """

    def __init__(self, placer: BatchPlacer):
        self.placer = placer
        self.samples: list[dict] = []
        self.greedy: list[dict] = []
        self.reward_failures: collections.Counter[str] = collections.Counter()

    def __call__(self, scored: EvalBatch) -> None:
        """Adds the rows of the batch's counted prompts."""
        self.samples += self._rows(scored, scored.sampled)
        self.greedy += self._rows(scored, scored.greedy)
        for generated in (scored.sampled, scored.greedy):
            self.reward_failures.update(generated.reward_failures)

    def _rows(self, scored: EvalBatch, generated: ScoredRollouts) -> list[dict]:
        batch = scored.batch
        n = len(generated.responses) // batch.batch_size
        lengths = self.placer.local(generated.rollouts.mask).sum(axis=-1)
        accuracy, reward = accuracy_part(generated), generated.parts["overall"]
        rows = []
        for r in range(scored.weight * n):
            i = r // n
            rows.append(
                {
                    "prompt_index": int(batch.record_indices[i]),
                    "record_id": batch.record_ids[i],
                    "data_source": batch.data_sources[i],
                    "sample": r % n,
                    "answer": batch.answers[i],
                    "response": generated.responses[r],
                    "reward": float(reward[r]),
                    "accuracy": float(accuracy[r]),
                    "length": int(lengths[r]),
                    "truncated": bool(generated.finish[r] == FINISH_LENGTH),
                }
            )
        return rows

    def gathered(self) -> tuple[list[dict], list[dict], dict[str, int]]:
        """Every process's rows in prompt and sample order and the reward failures summed (a collective: every
        process calls it).

        Returns:
          (sampled rows, greedy rows, reward failures by reason).
        """
        parts = allgather_json([self.samples, self.greedy, dict(self.reward_failures)])
        failures: collections.Counter[str] = collections.Counter()
        for part in parts:
            failures.update(part[2])

        def order(rows):
            return sorted(rows, key=lambda row: (row["prompt_index"], row["sample"]))

        return (
            order(row for part in parts for row in part[0]),
            order(row for part in parts for row in part[1]),
            {k: int(v) for k, v in failures.items() if v},
        )


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Writes `rows` to `path`, one JSON object a line (the file replaced)."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
