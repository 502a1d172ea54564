"""Method-selection reports (`arena report`): built only from run records through the results
library (arena.results); never imports torch."""
