"""DCaS services."""
