"""ml_collections configs, one per experiment; ``path.py:quick`` gives the smoke-test size."""
