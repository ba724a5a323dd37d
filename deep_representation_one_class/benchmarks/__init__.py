"""Speed benchmarks (``bench``), their measuring helpers (``perf``) and the reproduction of
the reference's layer implementation (``reference_layers``) they compare against."""
