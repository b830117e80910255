"""A run folder's files: paths, config and manifest, metrics, status, the trainer's lock;
listing runs and choosing one; a population's folder. No torch."""
