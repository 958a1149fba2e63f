"""Datasets: EasyR1-layout readers (`sources`), record validation (`examples`), the grain input pipeline
(`pipeline`). The synthetic tasks of the demo are in `shuffle_r1_jax.demo.synthetic`."""
