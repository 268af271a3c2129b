"""The edge node: answers "what should this session see next" from local state."""
