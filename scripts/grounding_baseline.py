"""The constant-box baseline of a grounding run: is its validation IoU localization or one good box for all?

Reads `<workdir>/eval_samples.jsonl` (run with `--config.eval.num_examples` at least the validation prompts, so
every prompt's first validation sample is recorded) and prints, per validation step: their mean reward accuracy and
continuous IoU, the mean IoU of the same boxes with the other prompts' true boxes (what the boxes score without
regard to the image: the gap to the first figure is localization), the share of distinct boxes among them, the most
frequent box and its share; and once, the IoU of the best constant box on the same prompts (an integer box in the
resized frame, searched exhaustively), continuous and at `--iou_threshold`. A policy localizes when its IoU clearly
beats that constant box with many distinct boxes.

    python scripts/grounding_baseline.py /tmp/g2/run_c1 --original 70 --resized 56
"""

from __future__ import annotations

import argparse
import collections
import json

import numpy as np

from shuffle_r1_jax.rewards.answer_parsing import final_answer
from shuffle_r1_jax.rewards.boxes import read_predicted_boxes, read_true_boxes


def iou_table(boxes: np.ndarray, true: np.ndarray) -> np.ndarray:
    """IoU of every box `[B, 4]` with every true box `[T, 4]` (x1, y1, x2, y2): `[B, T]`."""
    x1 = np.maximum(boxes[:, None, 0], true[None, :, 0])
    y1 = np.maximum(boxes[:, None, 1], true[None, :, 1])
    x2 = np.minimum(boxes[:, None, 2], true[None, :, 2])
    y2 = np.minimum(boxes[:, None, 3], true[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    true_area = (true[:, 2] - true[:, 0]) * (true[:, 3] - true[:, 1])
    return inter / (area[:, None] + true_area[None, :] - inter)


def best_constant_box(true: np.ndarray, size: int, threshold: float | None) -> tuple[list[int], float]:
    """The integer box in a `size` px image with the highest mean score over `true` `[T, 4]`: (box, score)."""
    best, best_score = None, -1.0
    coords = np.arange(size + 1)
    for x1 in coords:
        for x2 in coords[coords > x1]:
            y1, y2 = np.meshgrid(coords, coords, indexing="ij")
            keep = y2 > y1
            boxes = np.stack([np.full(keep.sum(), x1), y1[keep], np.full(keep.sum(), x2), y2[keep]], axis=1).astype(
                np.float64
            )
            scores = iou_table(boxes, true)
            if threshold is not None:
                scores = (scores >= threshold).astype(np.float64)
            mean = scores.mean(axis=1)
            i = int(np.argmax(mean))
            if mean[i] > best_score:
                best, best_score = [int(v) for v in boxes[i]], float(mean[i])
    return best, best_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir")
    parser.add_argument("--original", type=int, default=70, help="the synthetic image side in pixels")
    parser.add_argument("--resized", type=int, default=56, help="the resized image side the model sees")
    parser.add_argument("--iou_threshold", type=float, default=0.5)
    args = parser.parse_args()
    by_step = collections.defaultdict(list)
    with open(f"{args.workdir}/eval_samples.jsonl") as f:
        for line in f:
            row = json.loads(line)
            by_step[row["step"]].append(row)
    scale = args.resized / args.original
    first = by_step[min(by_step)]
    true = np.array([[v * scale for v in read_true_boxes(r["answer"])[0]] for r in first])
    print(f"{len(first)} validation prompts per step")
    print("| step | reward accuracy | IoU | same boxes, other prompts | distinct boxes | most frequent box (share) |")
    print("|---|---|---|---|---|---|")
    for step in sorted(by_step):
        rows = by_step[step]
        boxes = []
        for r in rows:
            read = read_predicted_boxes(final_answer(r["response"], boxed=False)[0])
            boxes.append(tuple(read[0][0]) if read and read[0] else None)
        counts = collections.Counter(boxes)
        read_rows = [i for i, b in enumerate(boxes) if b is not None]
        table = iou_table(np.array([boxes[i] for i in read_rows], np.float64), true)
        own = float(np.sum(table[np.arange(len(read_rows)), read_rows]) / len(rows))
        table[np.arange(len(read_rows)), read_rows] = np.nan  # each box against the OTHER prompts' true boxes
        shuffled = float(np.nansum(table) / (len(rows) * (len(rows) - 1)))
        top, top_n = counts.most_common(1)[0]
        print(
            f"| {step} | {np.mean([r['score'] for r in rows]):.3f} | {own:.3f} | {shuffled:.3f} | "
            f"{len(counts) / len(rows):.2f} | "
            f"{[int(v) for v in top] if top else None} ({top_n / len(rows):.2f}) |"
        )
    box, score = best_constant_box(true, args.resized, None)
    print(f"best constant box (continuous IoU): {box} scores {score:.3f}")
    box, score = best_constant_box(true, args.resized, args.iou_threshold)
    print(f"best constant box (IoU >= {args.iou_threshold}): {box} scores {score:.3f}")


if __name__ == "__main__":
    main()
