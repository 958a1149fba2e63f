"""Experiment orchestration and analysis: algorithm comparisons."""
