"""HTTP and WebSocket routes (DESIGN §6)."""
