"""The reports: the comparison of runs (``compare``), the claims study (``claims``) and the cost of
sparse targets (``costs``). Reports read MLflow through ``xentlab.tracking`` and their statistics
from ``xentlab.analysis``, and import no training code (no Lightning, no data pipeline), so a
report can be rebuilt from a store alone; ``scripts/`` holds their command lines.
"""
