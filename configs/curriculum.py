"""A curriculum (Kimi K1.5; Curr-ReFT orders by difficulty too): each epoch reads the training prompts easy to
hard, sorted by a numeric column. The demo's data has a `difficulty` level (ascending); a real dataset sorts by the
`pass_rate` column the offline filter writes (`scripts/filter_by_pass_rate.py`; descending: the most often solved
first), so with base=paper give the filtered data.

    python -m shuffle_r1_jax.train --config configs/curriculum.py                           # the demo (CPU)
    python scripts/filter_by_pass_rate.py --config configs/shuffle_r1_paper.py:model=7b,dataset=geo3k \\
        --config.model.checkpoint=models/Qwen2.5-VL-7B-Instruct --out_dir data/geo3k_filtered
    python -m shuffle_r1_jax.train --config configs/curriculum.py:base=paper,model=7b,dataset=geo3k \\
        --config.model.checkpoint=models/Qwen2.5-VL-7B-Instruct --config.data.train=data/geo3k_filtered/data \\
        --workdir runs/geo3k_7b_curriculum

Arguments: base (demo | paper; default demo), with base=paper the paper config's model, dataset, algorithm.
"""

from pathlib import Path

from shuffle_r1_jax.train.defaults import recipe_base


def get_config(arg: str | None = None):
    c, args = recipe_base(arg, Path(__file__).parent)
    c.data.sampling = "curriculum"
    if args.base == "demo":
        c.data.curriculum_column, c.data.curriculum_order = "difficulty", "ascending"
    else:
        c.data.curriculum_column, c.data.curriculum_order = "pass_rate", "descending"
    return c
