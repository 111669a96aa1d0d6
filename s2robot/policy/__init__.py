"""The BC policy: configuration (and presets), modeling, and the checkpoint format."""
