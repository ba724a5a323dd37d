"""Reports: plots, the run report, result tables, sweep aggregation, paper numbers.

Nothing is imported here; each module pulls in only what it needs (the aggregation runs
without TensorFlow).
"""
