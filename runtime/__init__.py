"""What every Proxima process shares below the edge and the central services.

* :mod:`runtime.backoff` — the one capped, jittered backoff;
* :mod:`runtime.nats` — how to reach NATS (typed settings → nats-py options);
* :mod:`runtime.supervisor` — the process's single NATS connection, and who to tell when it
  comes and goes;
* :mod:`runtime.registry` — the model registry: bundles in the Object Store, rollout state
  in the KV, read and written by trainer, rollout, edge and bench alike;
* :mod:`runtime.service` — the ``Service`` protocol and its composition;
* :mod:`runtime.settings` — typed settings from one TOML file, ``PROXIMA_*`` and flags;
* :mod:`runtime.files` — atomic file writes.

It imports :mod:`protocol` and nothing of ``edge_node``, ``central`` or ``model_export``.
"""
