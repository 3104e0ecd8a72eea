"""PairCap training recipe: the data pipeline (`data`) and the training loop (`loop`)."""
