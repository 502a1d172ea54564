"""Targets: what a run trains on and is scored on, one module each; each registers itself in
`arena.components.TARGETS`, which imports the modules of this package on its first lookup."""
