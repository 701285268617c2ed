"""The benchmark scripts, run from the repository root as modules: ``python -m benchmarks.<name>``
(``make bench``, ``make bench-adapt``); ``benchmarks.common`` holds what they share."""
