"""The online pipeline: augmentation, train/eval batches through grain, per-example map steps."""
