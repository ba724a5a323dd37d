"""Training: config -> model/optimizer/data factories (``build``), the run folder
(``run_dir``), the loop (``loop``) and the runner (``runner.run``), plus ``distribute``.

Nothing is imported here, so that ``methods`` can use ``training.distribute`` (a leaf) without
loading the runner.
"""
