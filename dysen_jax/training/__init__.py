"""Training internals: state, optimizer, train step, checkpoints."""
