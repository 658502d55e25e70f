"""Experiment configs: each file has `get_config(arg=None)` returning an ml_collections ConfigDict."""
