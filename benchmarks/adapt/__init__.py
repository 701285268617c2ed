"""The adaptation table (``python -m benchmarks.adapt_table``, ``make bench-adapt``) by job: ``runs``
(methods, run setup, keys and recipes, the scheduler and its workers), ``stats`` (summaries, paired
differences) and ``report`` (markdown tables, charts); ``benchmarks/adapt_table.py`` is the command."""
