"""Central services: trainer, bridge, rollout controller, latency monitor, and the CLI."""
