"""PairCap training: the stages (`stage_setups`, `trainable_parameters`), their data (`data`) and the loop (`loop`)."""
