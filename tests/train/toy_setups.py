"""Setup functions for the config's `setup` hook in tests: `fn(config) -> {dotted key: value}`."""


def points_at_elsewhere(config) -> dict:
    return {"model.checkpoint": "/elsewhere/checkpoint", "data.train": "/elsewhere/train.parquet"}


def sets_a_missing_key(config) -> dict:
    return {"model.no_such_key": 1}
