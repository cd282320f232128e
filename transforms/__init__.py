"""DCaS transforms."""
