"""The process reward model hook: a tiny value model's step values against transformers' hidden states times the
same value head, at the tokens that end each step."""

import shutil

import numpy as np
import pytest

from shuffle_r1_jax.models.qwen2_5_vl import load_config
from shuffle_r1_jax.models.qwen2_5_vl.value_model import write_value_head
from shuffle_r1_jax.rewards.pool import score_in_process
from shuffle_r1_jax.rewards.process_reward import ProcessRewardModelError, prm_reward, step_spans
from tests.tiny_assets import tiny_checkpoint  # noqa: F401

RESPONSE = "First, the red one.\n\nThen 2 + 2 = 4.\n\n\n\n  So the answer is \\boxed{4}.  "
PROBLEM = "What is 2 + 2?"


def test_steps_are_the_non_blank_pieces_between_separators():
    assert step_spans(RESPONSE, "\n\n") == [(0, 19), (21, 36), (42, 69)]
    assert [RESPONSE[a:b] for a, b in step_spans(RESPONSE, "\n\n")][-1] == "So the answer is \\boxed{4}."
    assert step_spans("\n\n  \n\n", "\n\n") == []


@pytest.fixture(scope="module")
def prm_checkpoint(tiny_checkpoint, tmp_path_factory):  # noqa: F811
    path = tmp_path_factory.mktemp("prm") / "model"
    shutil.copytree(tiny_checkpoint, path)
    hidden = load_config(path).text.hidden_size
    rng = np.random.default_rng(0)
    head = {"kernel": rng.normal(size=hidden).astype(np.float32), "bias": np.float32(0.25)}
    write_value_head(path, head)
    return path, head


def test_step_rewards_are_the_value_heads_reading_of_transformers_hidden_states(prm_checkpoint):
    import torch
    import transformers

    path, head = prm_checkpoint
    out = prm_reward(RESPONSE, "4", problem=PROBLEM, checkpoint=str(path), step_weight=0.5)
    assert out["accuracy"] == 1.0  # the outcome parts are the math reward's

    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(path, torch_dtype=torch.float32)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROBLEM}], add_generation_prompt=True, tokenize=False
    )
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    response = tokenizer(RESPONSE, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([list(prompt) + response]), output_hidden_states=True).hidden_states
    hidden = hidden[-1][0].numpy()
    expected = []
    for start, end in step_spans(RESPONSE, "\n\n"):
        # the first token whose decoded prefix reaches the step's last character
        token = next(t for t in range(len(response)) if len(tokenizer.decode(response[: t + 1])) >= end)
        value = hidden[len(prompt) + token] @ head["kernel"] + head["bias"]
        expected.append((start, end, 0.5 * float(value)))
    assert [s[:2] for s in out["spans"]] == [e[:2] for e in expected]
    np.testing.assert_allclose([s[2] for s in out["spans"]], [e[2] for e in expected], rtol=1e-4, atol=1e-5)
    assert out["prm/step_mean"] == pytest.approx(np.mean([2 * e[2] for e in expected]), rel=1e-4)


def test_the_hook_runs_as_a_reward_with_its_options_and_the_problem_from_the_context(prm_checkpoint, tiny_checkpoint):  # noqa: F811
    path, _ = prm_checkpoint
    scores = score_in_process(
        "prm", [RESPONSE, "no steps"], ["4", "4"], [{"problem": PROBLEM}] * 2, options={"checkpoint": str(path)}
    )
    assert scores.failure_counts["exception"] == 0 and scores.spans[0] is not None and len(scores.spans[0]) == 3
    with pytest.raises(ProcessRewardModelError, match="no value_head.safetensors"):
        prm_reward(RESPONSE, "4", problem=PROBLEM, checkpoint=str(tiny_checkpoint))
