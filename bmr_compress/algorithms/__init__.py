"""Algorithms the pipeline calls: the default Laplace reduction, recovery, the variational refit
rounds and the operating-points measurement of one run.

They take models, batches and settings objects and return records; the pipeline decides
files, stages and logging around them.
"""

