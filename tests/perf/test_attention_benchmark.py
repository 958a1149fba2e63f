"""The attention benchmark on its smoke shape: every implementation timed and checked, failures recorded."""

from shuffle_r1_jax.perf.attention_benchmark import SHAPES, attention_inputs, format_attention, run_attention_benchmark


def test_implementations_are_timed_and_match_float32_xla_and_a_failure_is_a_row():
    shape = SHAPES["smoke"]
    results = run_attention_benchmark(shape, ("xla", "chunked", "no_such_kernel"), runs=1, log=lambda _: None)
    xla, chunked, missing = results
    assert xla.seconds > 0 and xla.max_abs_error < 1e-5 and chunked.max_abs_error < 1e-5
    assert missing.seconds is None and "'no_such_kernel'" in missing.error
    text = format_attention(results, shape, runs=1)
    assert "| no_such_kernel | failed: ValueError" in text and text.count("\n| ") == 4


def test_the_mask_pads_rows_on_both_sides():
    q, k, v, mask = attention_inputs(SHAPES["smoke"])
    assert q.shape == (2, 256, 4, 32) and k.shape == v.shape == (2, 256, 2, 32)
    # row 0 unpadded; row 1: its first 16 queries see no key, its last 32 keys are seen by no query
    assert bool(mask[0].any(axis=1).all()) and bool(mask[0].any(axis=0).all())
    assert not bool(mask[1, :16].any()) and not bool(mask[1, :, 224:].any()) and bool(mask[1, 16:, 16:224].any())
