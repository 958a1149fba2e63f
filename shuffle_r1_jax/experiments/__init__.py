"""Experiment orchestration and analysis: algorithm comparisons (`comparison`: the planned runs and what their
metrics say; `runner`: training the runs and the report; `plots`: the curves)."""
