"""Show and Tell captioning on the built-in `shapes` dataset (64x64; 5 templated captions per image).

The small encoder (`small_cnn`) is trained from scratch with the LSTM, so the image embedding is
fed at every step (model.image_every_step; with it only as the first input the CNN never learns
colours in this budget, see research/models/captioning/show_tell.py). No flip augmentation:
`hflip` swaps 'left' and 'right' but cannot reorder the captions' left-to-right listings.
Greedy decoding; scored on the shapes test split by BLEU-1..4 and CIDEr-D (coco-caption's
scorers). About 15 minutes on 2 CPU cores.
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("show_tell", backbone="small_cnn", embed_dim=128, hidden_size=256,
                              dropout=0.3, image_every_step=True)
  config.dataset.name = "shapes"
  config.dataset.eval_split = "test"
  config.task = task_config("captioning", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), augment=(),
                            max_length=20)
  config.batch_size = 64
  config.num_train_steps = 2500
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 100
  config.optimizer.grad_clip_norm = 5.0
  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
