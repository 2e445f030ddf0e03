"""Personal digests: when each one is due, what it says, and the poster that queues and sends them."""
