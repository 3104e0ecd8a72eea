"""Benchmarks of PairCap against baselines measured in the same run; see benchmarks/README.md.

They run under the thread policy of the `paircap` commands: OpenMP's passive waiting unless the environment names a
policy, set here, before any benchmark imports torch (`paircap.threads`)."""

from paircap.threads import prefer_passive_waiting

prefer_passive_waiting()
