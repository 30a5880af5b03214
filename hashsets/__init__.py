"""Hash-set importers and indexes (exact and perceptual)."""
