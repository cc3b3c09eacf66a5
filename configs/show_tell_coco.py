"""Show and Tell on COCO captions (TFDS `coco_captions`: COCO 2014 with Karpathy and Li's splits).

Trains on Karpathy's train + restval (113,287 images, 5 captions each); scores beam search
(beam 3) captions of Karpathy's 5,000-image test split with BLEU-1..4 and CIDEr-D
(coco-caption's scorers; tokenization: research.evaluation.captioning). Expected BLEU-4 27.7
(Vinyals et al. 2015, Table 1; see experiments/show_tell_coco.py).

Recipe (the paper's, on this framework's parts): a ResNet-50 encoder initialized from an ImageNet
classification run (config.init_from.workdir; e.g. configs/resnet50_imagenet.py) and kept frozen
(parameters and BatchNorm statistics), as the paper's first training stage; 512-d word and image
embeddings and LSTM memory, dropout 0.5; vocabulary: words seen at least 5 times; captions cut at
16 words. Needs `coco_captions` prepared in data_dir
(tfds build coco_captions --file_format=array_record) and a GPU.
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config
from research.models.captioning.show_tell import FREEZE_ENCODER


def get_config():
  config = default_config()
  config.model = model_config("show_tell", backbone="resnet50", embed_dim=512, hidden_size=512,
                              dropout=0.5, encoder_train=False)
  config.dataset.name = "coco_captions"
  config.dataset.train_split = "train+restval"
  config.dataset.eval_split = "test"
  config.dataset.num_workers = 8
  config.task = task_config("captioning", image_size=224, max_length=18, min_word_count=5,
                            beam_size=3, length_penalty=0.0, augment=("flip",))
  config.init_from.workdir = "runs/resnet50_imagenet"
  config.optimizer.freeze = (FREEZE_ENCODER,)
  config.batch_size = 128
  config.eval_batch_size = 250
  config.num_epochs = 20.0
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 4e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 500
  config.optimizer.grad_clip_norm = 5.0
  config.log_every_steps = 200
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 2000
  return config
