"""Ray tasks and actors, and scan orchestration. The only package that imports ray."""
