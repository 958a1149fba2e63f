"""One rollout batch, from prompts to scored responses: the rollout types (`types`), placing each process's
prompts on the mesh (`placement`), sampling and scoring (`generate`), merging several scored prompt batches into
one (`merge`: CPPO's fill), DAPO's dynamic-sampling refill (`dynamic_sampling`) and the batch's metrics (`metrics`)."""
