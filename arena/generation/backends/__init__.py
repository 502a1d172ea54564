"""Generation backends; each module registers its engine in `arena.generation.engine.ENGINES`."""
