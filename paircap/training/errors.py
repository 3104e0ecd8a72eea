"""Expected ways a training run stops: `train_accelerate.py` reports them in one line and exits 2."""


class TrainingError(RuntimeError):
    """A run that cannot go on for a reason the user can act on (the message says which)."""


class CheckpointError(TrainingError):
    """No checkpoint of a run can be trusted."""


class NonFiniteLossError(TrainingError):
    """A loss was NaN or infinite (the step is named); no update, checkpoint or release came from it."""


class NonFiniteWeightsError(TrainingError):
    """A trained parameter is NaN or infinite, so no release is exported."""
