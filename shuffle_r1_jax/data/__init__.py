"""Datasets: EasyR1-layout readers (`sources`), record validation (`examples`), the grain input pipeline
(`pipeline`), synthetic tasks (`synthetic`)."""
