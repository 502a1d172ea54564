"""The results library: run records as data, read without torch, transformers, peft or lm-eval.

One job per module, imported directly (`from arena.results.load import load_results`):

    run_record   the typed run record (`RunRecord`) every writer and reader of record.json uses
    flatten      a record -> one leaderboard row; the run's state (only "done" is a result)
    load         every record under a folder as one DataFrame (`Results`), the training log
    scales       the two scales (accuracy, proxy) and which one carries signal
    filters      selecting runs by column values
    pareto       non-dominated sets on (general, target)
    stats        Welch's t, paired standard errors, bootstrap intervals, the two-method comparison
    leaderboard  means over seeds with error bars, one row per method
    matched      forgetting read off interpolation paths at a common target gain
    tables       per-run detail tables (benchmarks, modules) and metric correlations
    exports      leaderboards as CSV / JSON / Markdown / LaTeX text
    figures      plotly figures shared by the dashboard and `arena report` (imports plotly)
"""
