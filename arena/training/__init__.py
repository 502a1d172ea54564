"""The shared training core: one loop for every method and objective."""
