"""Computed offline from the stored examples: training targets, the dataset that stores them, class statistics."""
