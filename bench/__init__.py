"""The benchmarks, one module per BENCHMARKS.md section; run from the repository root as
`python -m bench.NAME` (`python -m bench.run_all` runs them all).

They use bmr_compress only through its public faces: the names `bmr_compress` and each of its
subpackages export (tests/test_architecture.py checks this, and that no file here edits
`sys.path` or forms an import cycle). report.py writes the sections; common.py and
baselines.py hold the code several benchmarks share.
"""
