"""Datasets: EasyR1-layout readers, the input pipeline, synthetic tasks."""
