"""DCaS pipelines."""
