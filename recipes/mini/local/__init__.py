"""What the stages of the mini recipe do, and what only it needs (its ESC-50 reader and mixtures, the stand-in models,
the probes, the report, the release packing)."""
