"""Incomplete learning in SFT (ILP, arXiv 2604.10079): which training samples a finished SFT run
still gets wrong, and why. `arena ilp --run R` (arena/commands/ilp.py) and the sweep's `ilp` stage
call `arena.ilp.run.ilp_run`; docs/ilp.md describes the probes, the five cause rules and the files."""
