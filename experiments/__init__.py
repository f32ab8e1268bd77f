"""Runnable experiments: ``python -m experiments.train --config=experiments/configs/X.py``."""
