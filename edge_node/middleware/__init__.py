"""Pure ASGI middlewares, one concern each."""
