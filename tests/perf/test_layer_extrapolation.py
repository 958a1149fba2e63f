"""The layer extrapolation of memory plans: the fitted line, its nonlinearity measure and the report."""

import dataclasses

import pytest

from shuffle_r1_jax.models.qwen2_5_vl import qwen2_5_vl_72b_config
from shuffle_r1_jax.perf.layer_extrapolation import fit_programs, format_fits, with_text_layers
from shuffle_r1_jax.perf.memory_plan import GiB


@dataclasses.dataclass
class _Program:
    name: str
    phase_peak: int | None


@dataclasses.dataclass
class _Plan:
    programs: list

    def program(self, name):
        return next(p for p in self.programs if p.name == name)


def _plans(peaks_by_layers):
    return {n: _Plan([_Program(name, peak) for name, peak in peaks.items()]) for n, peaks in peaks_by_layers.items()}


def test_a_straight_line_is_read_at_the_real_layer_count():
    plans = _plans({n: {"train_step": (10 + 2 * n) * GiB, "sampler_decode": 5 * GiB} for n in (2, 4, 8)})
    train, decode = fit_programs(plans)
    assert train.per_layer == pytest.approx(2 * GiB) and train.nonlinearity == pytest.approx(0, abs=1)
    assert train.at(80) == pytest.approx(170 * GiB) and decode.at(80) == pytest.approx(5 * GiB)
    text = format_fits([train, decode], 80, 80.0)
    assert "| train_step | 14.00 | 18.00 | 26.00 | 2.000 | 0.00 | 170.00 | NO |" in text
    assert "Extrapolated step peak per device: 170.00 GiB of 80 GiB: does NOT fit." in text


def test_a_bent_line_shows_its_nonlinearity_and_a_failed_program_has_no_fit():
    plans = _plans({2: {"a": 10 * GiB, "b": None}, 4: {"a": 14 * GiB, "b": None}, 8: {"a": 30 * GiB, "b": GiB}})
    a, b = fit_programs(plans)
    assert a.nonlinearity > 1 * GiB
    assert b.per_layer is None and b.at(80) is None
    assert "| b | - | - | 1.00 | - | - | - | no |" in format_fits([a, b], 80, 80.0)


def test_only_the_decoder_depth_changes():
    config = qwen2_5_vl_72b_config()
    fewer = with_text_layers(config, 4)
    assert fewer.text.num_hidden_layers == 4
    assert dataclasses.replace(fewer.text, num_hidden_layers=80) == config.text and fewer.vision == config.vision
