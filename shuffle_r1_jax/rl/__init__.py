"""The RL core: pure jittable functions over arrays, independent of the model.

Modules (one concern each):
  algorithms     the algorithm table: per `rl.algorithm` name, its estimator, selector, DAPO refill and fixed settings
  advantages     GRPO, Dr.GRPO, RLOO, REINFORCE++(-baseline) by name (a registry), CPPO pruning
  selection      update-batch selectors by name (a registry): all rollouts, CPPO, PTS, PTS + ABS (Shuffle-R1)
  pts            Pairwise Trajectory Sampling: which pairs of rollouts each prompt keeps
  batch_shuffle  Advantage-based Batch Shuffle: weighted draws of pairs, the update-batch layout
  gae            GAE over the valid positions, VC-PPO's decoupled GAE, the critic's statistics (PPO with a critic)
  policy_loss    clipped surrogate (PPO, clip-higher, dual clip, GSPO) and its metrics
  opmd           Kimi K1.5's online policy mirror descent loss (squared error per response) and its metrics
  value_loss     PPO's clipped value loss and its metrics
  kl             KL estimators k1/k2/k3/abs, KL loss and KL reward penalty
  aggregation    loss aggregation modes with global denominators (exact gradient accumulation)
  dapo           dynamic-sampling group filter, overlong reward shaping
  metrics        masked reductions, advantage collapse, selection metrics, utilization, entropy from logits

One rollout batch, in order (G prompts x n rollouts, T response positions, cfg a `selection.SelectionConfig`):
  alg   = algorithms.get_algorithm(name)                                            # estimator, selector names
  adv   = advantages.get_advantage_estimator(alg.estimator)(token_rewards, mask)    # token [G,n,T], rollout [G,n]
  rows, valid, stats = selection.select_update_rows(adv.rollout, cfg, key)          # int32[U], bool[U]

where the Shuffle-R1 selector "pts_abs" runs PTS, then ABS:
  idx   = pts.pairwise_trajectory_sampling(adv.rollout, keep_ratio)                 # [G, 2M]
  w     = batch_shuffle.pair_weights(pts.pair_advantages(adv.rollout, idx))         # [G*M]
  draws = batch_shuffle.advantage_batch_shuffle(batch_shuffle.power_normalize(w, power), rounds, per_round, key)
  batch = batch_shuffle.update_batch_indices(idx, draws, n)                         # flat rollout ids, validity

PPO with a critic ([B, T] tokens, values the critic's predictions when the rollouts were scored):
  adv, returns = gae.decoupled_gae(token_rewards, values, mask, gamma=g, actor_lam=a, critic_lam=c)
  adv          = advantages.masked_whiten(adv, mask)
  pg_loss, _   = policy_loss.ppo_policy_loss(logp, old_logp, adv, mask)
  vf_loss, _   = value_loss.clipped_value_loss(new_values, values, returns, mask, clip_range=0.2)
"""
