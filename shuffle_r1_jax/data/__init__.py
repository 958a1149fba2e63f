"""Datasets: EasyR1-layout readers (`sources`), record validation (`examples`), the grain input pipeline
(`pipeline`), per-record pass rates (`pass_rates`) and the curriculum and prioritized record orders
(`record_order`). The synthetic tasks of the demo are in `shuffle_r1_jax.demo.synthetic`."""
