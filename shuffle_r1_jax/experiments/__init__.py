"""Experiment orchestration and analysis: algorithm comparisons (`comparison`: the planned runs and what their
metrics say; `runner`: training the runs and the report; `plots`: the curves), VC-PPO's value pretraining measured
(`value_pretraining`) and the offline pass-rate filter run before training (`pass_rate_filter`)."""
