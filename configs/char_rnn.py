"""char-RNN (Karpathy 2015): a character-level LSTM language model on a text file.

Default text: NumPy docstrings shipped with the project (research/data/text/numpy_docstrings.txt,
BSD-licensed; 361k training / 40k test characters). Any UTF-8 file:
  --config.dataset.data_dir=path/to/input.txt
Scored by test bits per character against the test text's unigram entropy (about 4.97 bits for
the default text). Samples (temperature `task.temperature`) are drawn at every evaluation
(eval/step_N/samples.png) and by research.tasks.char_rnn.sample_text(workdir, prime, ...).
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("char_rnn", embed_dim=64, hidden_size=256, num_layers=2, dropout=0.1)
  config.dataset.name = "text"
  config.dataset.data_dir = ""  # '': the shipped default text.
  config.dataset.eval_split = "test"
  config.task = task_config("char_rnn", seq_length=100, temperature=0.8)
  config.batch_size = 32
  config.num_train_steps = 2000
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 3e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 50
  config.optimizer.grad_clip_norm = 5.0
  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
