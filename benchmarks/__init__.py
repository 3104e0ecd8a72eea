"""Benchmarks of PairCap against baselines measured in the same run; see benchmarks/README.md."""
