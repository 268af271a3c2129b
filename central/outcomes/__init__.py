"""Business outcomes: what a model version earns, measured honestly.

* :mod:`central.outcomes.moments` — mergeable per-session sums, the unit every figure is
  estimated from (a session, not an impression, is the independent draw);
* :mod:`central.outcomes.stats` — intervals for rates and means, lift of one arm over
  another, and always-valid confidence sequences for a guardrail checked every tick;
* :mod:`central.outcomes.ope` — off-policy estimates of a candidate ranking from logged
  answers and their propensities.
"""
