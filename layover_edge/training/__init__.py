"""Training and evaluation: the feature cache (the frozen backbone runs once), batches, the
training loop with the paper's recipe, one run end to end, evaluation, tag thresholds, metrics."""
