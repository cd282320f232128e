"""Adapters: the outside world (storage, queue, status store) behind small ports; records in adapters.jobs."""
