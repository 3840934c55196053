"""Data: the bundled synthetic ads world (`synthetic`) and random batches (`random_batch`)."""
