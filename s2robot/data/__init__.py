"""Data: key names, the episode store, feature caches, training windows and the normalizer."""
