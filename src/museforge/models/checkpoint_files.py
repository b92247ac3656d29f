"""The files of a checkpoint directory and its error, without torch: the zoo lists models from these files
alone (see `museforge.models.checkpoint` for the format)."""

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TRAINING_STATE_FILE = "training_state.pt"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, incomplete or unreadable; the message says which part."""
