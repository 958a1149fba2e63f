"""The policy update: log-probs of rollouts in vocabulary chunks (`logprobs`), one optimizer step over a
mini-batch with gradient accumulation (`update`), and the optax optimizer (`optimizer`)."""
