"""The entrypoint's exit status and error line for a run that stops on failing rewards (the trainer is replaced by
one whose `fit` stops; the trainer tests run the real stop)."""

import logging
import types

from shuffle_r1_jax.rewards.health import RewardHealthError
from shuffle_r1_jax.train import __main__ as entrypoint
from shuffle_r1_jax.train import settings, trainer

STOP = "every reward failed in 3 consecutive steps (timeout 48, exception 0, invalid_output 0, worker_died 0)"


class _StoppingTrainer:
    closed = False

    def __init__(self, run, workdir):
        del run, workdir

    def fit(self):
        raise RewardHealthError(STOP)

    def close(self):
        _StoppingTrainer.closed = True


def test_a_reward_health_stop_exits_2_with_one_error_line_and_closes_the_trainer(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(entrypoint, "_CONFIG", types.SimpleNamespace(value=None))
    monkeypatch.setattr(entrypoint, "_WORKDIR", types.SimpleNamespace(value=str(tmp_path)))
    monkeypatch.setattr(entrypoint, "_VERBOSE", types.SimpleNamespace(value=False))
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)
    monkeypatch.setattr(entrypoint.absl_logging, "set_verbosity", lambda level: None)
    monkeypatch.setattr(settings, "start_distributed", lambda config: False)
    monkeypatch.setattr(settings, "prepare", lambda config: (config, None))
    monkeypatch.setattr(trainer, "Trainer", _StoppingTrainer)
    assert entrypoint.main([]) == 2
    assert capsys.readouterr().err == f"error: {STOP} (traceback in {tmp_path / 'run.log'})\n"
    assert _StoppingTrainer.closed
    log = (tmp_path / "run.log").read_text()
    assert "Traceback" in log and f"RewardHealthError: {STOP}" in log
    run_logs = [h for h in logging.getLogger().handlers if getattr(h, "baseFilename", "").endswith("run.log")]
    assert not run_logs  # the run log's handler is removed again
