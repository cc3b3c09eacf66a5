"""Pretrained weights from torchvision checkpoints: convert.py (layouts and names), files.py
(reading .pth / .safetensors), workdir.py (the run folder evaluate and init_from read),
research/cli/import_weights.py (the command `research-import-weights`)."""
