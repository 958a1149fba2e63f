"""One rollout batch, from prompts to scored responses: the rollout types (`types`), placing each process's
prompts on the mesh (`placement`), sampling and scoring (`generate`), DAPO's dynamic-sampling refill
(`dynamic_sampling`) and the batch's metrics (`metrics`)."""
