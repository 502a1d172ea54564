"""Method-selection reports (`arena report`): built only from run records through the pure-pandas
results layer (dashboard.processing); never imports torch."""
