"""Recurrent sequence models (registered in MODELS): Show-and-Tell captioning and char-RNN, with
their shared LSTM and decoding (greedy, beam search, sampling)."""
from research.models.captioning import char_rnn, show_tell  # noqa: F401
