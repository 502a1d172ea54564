"""Training objectives, one module each; each registers itself in `arena.components.OBJECTIVES`,
which imports the modules of this package on its first lookup."""
