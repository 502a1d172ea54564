"""Fine-tuning methods, one module each; each registers itself in `arena.components.METHODS`,
which imports the modules of this package on its first lookup."""
