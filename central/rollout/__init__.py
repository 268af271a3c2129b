"""Staged rollouts: plans per region, guardrails judged from edge telemetry, rollback.

CentralError                         (central.errors)
└── RolloutPlanError                 a plan or an operator's request breaks a rule
    └── PlanConflictError            the plan kept changing under a compare-and-set
"""
