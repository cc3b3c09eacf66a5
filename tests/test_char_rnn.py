"""char-RNN: the text dataset, temperature sampling, and a short run that beats the unigram entropy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.models  # noqa: F401
from research.config_sections import model_config, task_config
from research.core.config import default_config
from research.core.train import train_and_evaluate
from research.data import datasets, text
from research.models.captioning import decoding
from research.tasks.char_rnn import sample_text

_WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> str:
  """20k characters of made-up sentences: predictable within words, random between them."""
  rng = np.random.default_rng(0)
  sentences = []
  while sum(len(s) for s in sentences) < 20_000:
    words = rng.choice(_WORDS, size=rng.integers(3, 8))
    sentences.append(" ".join(words).capitalize() + ".\n")
  path = tmp_path_factory.mktemp("text") / "input.txt"
  path.write_text("".join(sentences))
  return str(path)


def test_text_dataset_splits_and_sequences(text_file):
  with open(text_file) as f:
    whole = f.read()
  train = datasets.get_data_source("text", "train", text_file)[0]["text"]
  test = datasets.get_data_source("text", "test", text_file)[0]["text"]
  assert train + test == whole and len(train) == int(len(whole) * text.TRAIN_FRACTION)
  with pytest.raises(ValueError, match="no split 'validation'"):
    datasets.get_data_source("text", "validation", text_file)
  vocab = text.CharVocabulary(train)
  assert vocab.decode(vocab.encode("Beta zeta.\n")) == "Beta zeta.\n"
  assert vocab.encode("~")[0] == text.CharVocabulary.UNK
  windows = text.CharSequences(vocab.encode(test), 11, 10)
  assert len(windows) == (len(test) - 11) // 10 + 1
  assert vocab.decode(windows[2]["ids"]) == test[20:31]
  assert text.unigram_entropy_bits("aabb") == pytest.approx(1.0)
  assert datasets.get_builder("text", "").info.path == text.DEFAULT_FILE


def test_sampling_at_low_temperature_is_greedy():
  logits_table = jnp.asarray(np.random.default_rng(0).normal(size=(7, 7)), jnp.float32)
  step = lambda state, tokens: (logits_table[tokens], state)  # noqa: E731
  first = jnp.arange(4, dtype=jnp.int32)
  cold = decoding.sample(step, jnp.zeros((4, 1)), first, 10, jax.random.PRNGKey(0), temperature=1e-4)
  expected, prev = [], np.arange(4)
  for _ in range(10):
    prev = np.argmax(np.asarray(logits_table)[prev], -1)
    expected.append(prev)
  np.testing.assert_array_equal(cold, np.stack(expected, 1))
  hot = decoding.sample(step, jnp.zeros((4, 1)), first, 200, jax.random.PRNGKey(0), temperature=1.0)
  assert len(np.unique(np.asarray(hot))) == 7


def test_char_rnn_beats_unigram_entropy(text_file, tmp_path):
  config = default_config()
  config.model = model_config("char_rnn", embed_dim=16, hidden_size=64, num_layers=1, dropout=0.0)
  config.dataset.name = "text"
  config.dataset.data_dir = text_file
  config.dataset.eval_split = "test"
  config.task = task_config("char_rnn", seq_length=32, sample_length=50, num_samples=1)
  config.batch_size = 32
  config.eval_batch_size = 64
  config.num_train_steps = 150
  config.log_every_steps = 50
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-2
  config.compilation_cache_dir = ""
  result = train_and_evaluate(config, str(tmp_path))
  assert result["eval/bits_per_character"] < result["eval/unigram_entropy"] - 1.0, result
  assert (tmp_path / "eval" / "step_150" / "samples.png").exists()
  sample = sample_text(str(tmp_path), prime="Alpha ", length=40, temperature=0.5)
  assert sample.startswith("Alpha ") and len(sample) == 46
