"""torchvision checkpoints into the project (research/weights): the converted models give torchvision's
logits, BatchNorm statistics carry over, checkpoint files of both formats read the same, and the
folder `import_weights` writes is evaluated by the evaluate path and loaded by the configs' init_from.

Models are randomly initialized (tests/torch_weights.randomize_) with a 16-wide classifier for VGG and
AlexNet (their fc layers are the same code at any width), on 64x64 inputs (AlexNet 127x127, so that
its last map is 3x3 and the flattening order matters; GoogLeNet 57x57, where ceil-mode pools differ).
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import research.models  # noqa: E402,F401
from research.core.checkpoint import load_variables, merge_pretrained  # noqa: E402
from research.core.config import load_config_file  # noqa: E402
from research.core.registry import MODELS  # noqa: E402
from research.tasks.base import build_registered  # noqa: E402
from research.cli import import_weights  # noqa: E402
from research.weights.convert import VGGS, WeightsError, convert, layout, torch_to_flax  # noqa: E402
from research.weights.files import read_state_dict  # noqa: E402
from research.weights.workdir import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from tests.torch_weights import randomize_  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 10


def _torchvision(arch: str, hidden: int = 16, randomize: bool = True) -> "torch.nn.Module":
  """A torchvision `arch` in eval mode (GoogLeNet with aux heads and transform_input, as its
  published weights), VGG / AlexNet with `hidden`-wide fc layers; `randomize`: randomize_'s
  weights and BatchNorm statistics (else torchvision's initialization)."""
  torch.manual_seed(0)
  if arch == "googlenet":
    model = torchvision.models.googlenet(num_classes=NUM_CLASSES, aux_logits=True, transform_input=True,
                                         init_weights=False)
  elif arch in VGGS:  # Not initializing the 4096-wide classifier that is replaced below saves time.
    model = getattr(torchvision.models, arch)(num_classes=NUM_CLASSES, init_weights=False)
  else:
    model = getattr(torchvision.models, arch)(num_classes=NUM_CLASSES)
  if arch in VGGS or arch == "alexnet":
    linear = [i for i, m in enumerate(model.classifier) if isinstance(m, torch.nn.Linear)]
    sizes = [model.classifier[linear[0]].in_features, hidden, hidden, NUM_CLASSES]
    for i, n_in, n_out in zip(linear, sizes, sizes[1:]):
      model.classifier[i] = torch.nn.Linear(n_in, n_out)
  if randomize:
    randomize_(model)
  return model.eval()


def _torch_logits(model, x: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(x).permute(0, 3, 1, 2)).numpy()


def _assert_close(ours, expected, tol: float = 1e-4) -> None:
  expected = np.asarray(expected)
  np.testing.assert_allclose(np.asarray(ours), expected, rtol=tol, atol=tol * np.abs(expected).max())


def _assert_batch_stats_carry_over(arch: str, ref) -> None:
  """Every BatchNorm's running_mean / running_var is a converted batch_stats array."""
  state_dict = ref.state_dict()
  variables, sources = torch_to_flax(state_dict, *layout(arch))
  stats = {p: k for p, k in sources.items() if p.startswith("batch_stats/")}
  assert len(stats) == 2 * sum(isinstance(m, torch.nn.BatchNorm2d) for m in ref.modules()) > 0
  for path, key in stats.items():
    np.testing.assert_array_equal(_leaf(variables, path), state_dict[key].numpy())


def _leaf(tree, path: str):
  for part in path.split("/"):
    tree = tree[part]
  return tree


@functools.lru_cache(maxsize=None)
def _model(arch: str) -> "torch.nn.Module":
  """_torchvision(arch), built once for the module's tests."""
  return _torchvision(arch)


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn",
                                  "vgg16", "vgg16_bn", "alexnet"])
def test_converted_model_gives_torchvision_logits(arch):
  ref = _model(arch)
  size = 127 if arch == "alexnet" else 64
  x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
  variables, kwargs = convert(arch, ref.state_dict())
  assert kwargs["num_classes"] == NUM_CLASSES
  ours = jax.jit(MODELS.build(arch, **kwargs).apply)(variables, jnp.asarray(x))
  _assert_close(ours, _torch_logits(ref, x))
  if "batch_stats" in variables:
    _assert_batch_stats_carry_over(arch, ref)


def test_googlenet_with_transform_input_and_aux_heads():
  """Eval: torchvision's transform_input on ImageNet-normalized pixels equals our model on pixels
  normalized with mean = std = 0.5 (what import_weights configures). Train mode (batch statistics,
  dropout off): the auxiliary heads, whose fc1 reads a flattened 4x4 map, agree too."""
  ref = _model("googlenet")
  pixels = np.random.default_rng(0).uniform(size=(2, 57, 57, 3)).astype(np.float32)  # Odd: ceil-mode pools.
  variables, kwargs = convert("googlenet", ref.state_dict())
  assert kwargs == {"num_classes": NUM_CLASSES, "aux_logits": True}
  model = MODELS.build("googlenet", **kwargs, dropout_rate=0.0, aux_dropout_rate=0.0)
  imagenet = (pixels - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
  _assert_close(jax.jit(model.apply)(variables, jnp.asarray((pixels - 0.5) / 0.5)), _torch_logits(ref, imagenet))
  _assert_batch_stats_carry_over("googlenet", ref)
  ref.train()
  for m in ref.modules():
    if isinstance(m, torch.nn.Dropout):
      m.eval()
  with torch.no_grad():
    expected = ref(torch.tensor(imagenet).permute(0, 3, 1, 2))
  ref.eval()
  train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0])
  ours = train(variables, jnp.asarray((pixels - 0.5) / 0.5))
  for name, theirs in zip(("logits", "aux2", "aux1"), expected):
    # Statistics of 2 images x 2 x 2 pixels in the last stages amplify rounding: 1e-3.
    _assert_close(ours[name], theirs.numpy(), tol=1e-3)


def test_deep_resnets_and_vgg19_convert_onto_our_models():
  """resnet101/152 and vgg19(_bn) repeat the blocks checked numerically above: their checkpoints
  convert onto every array of our models (convert checks paths and shapes), each the same values
  (sum and sum of squares; only the layout changes)."""
  for arch in ("resnet101", "resnet152", "vgg19", "vgg19_bn"):
    state_dict = _torchvision(arch, randomize=False).state_dict()
    variables, _ = convert(arch, state_dict)
    _, sources = torch_to_flax(state_dict, *layout(arch))
    assert set(sources.values()) == {k for k in state_dict if not k.endswith("num_batches_tracked")}
    for path, key in sources.items():
      ours, theirs = _leaf(variables, path).astype(np.float64), state_dict[key].numpy().astype(np.float64)
      assert ours.size == theirs.size and np.allclose([ours.sum(), (ours ** 2).sum()],
                                                      [theirs.sum(), (theirs ** 2).sum()]), path


def test_wrong_architecture_is_a_clear_error():
  state_dict = _model("resnet18").state_dict()
  with pytest.raises(WeightsError, match=r"not a torchvision resnet34 checkpoint: \d+ arrays missing .*layer1_2"):
    convert("resnet34", state_dict)
  with pytest.raises(WeightsError, match="not a torchvision vgg11 checkpoint: it has no classifier.6.weight"):
    convert("vgg11", state_dict)
  alexnet = _model("alexnet").state_dict()
  with pytest.raises(WeightsError, match="not a torchvision vgg16 checkpoint: it has no classifier.0.weight"):
    convert("vgg16", alexnet)


def test_pth_and_safetensors_files_read_the_same(tmp_path):
  from safetensors.torch import save_file
  state_dict = _model("resnet18").state_dict()
  torch.save(state_dict, tmp_path / "plain.pth")
  torch.save({"model": {f"module.{k}": v for k, v in state_dict.items()}, "epoch": 3}, tmp_path / "reference.pth")
  save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp_path / "model.safetensors"))
  for name in ("plain.pth", "reference.pth", "model.safetensors"):
    read = read_state_dict(str(tmp_path / name))
    assert sorted(read) == sorted(state_dict), name
    for k, v in state_dict.items():
      np.testing.assert_array_equal(read[k], v.numpy())
  torch.save([1, 2], tmp_path / "list.pth")
  (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
  (tmp_path / "broken.pth").write_bytes(b"PK\x03\x04 truncated")
  for name, message in (("missing.pth", "no such file"), ("list.pth", "holds a list, not a state_dict"),
                        ("broken.safetensors", "not a readable .safetensors file"),
                        ("broken.pth", "not a readable PyTorch checkpoint")):
    with pytest.raises(WeightsError, match=message):
      read_state_dict(str(tmp_path / name))


def test_command_never_imports_torch_for_safetensors(tmp_path):
  """`python -m research.cli.import_weights` on a .safetensors file, with torch made unimportable."""
  from safetensors.torch import save_file
  ref = _model("alexnet")
  save_file(ref.state_dict(), str(tmp_path / "alexnet.safetensors"))
  code = ("import sys; sys.modules['torch'] = None; from research.cli.import_weights import run; "
          f"run(['--arch', 'alexnet', '--weights', {str(tmp_path / 'alexnet.safetensors')!r}, "
          f"'--out', {str(tmp_path / 'run')!r}])")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT})
  assert result.returncode == 0, result.stderr
  assert "alexnet" in result.stdout
  variables, _ = convert("alexnet", ref.state_dict())
  jax.tree_util.tree_map(np.testing.assert_array_equal, load_variables(str(tmp_path / "run")), variables)


def _evaluate(workdir: str):
  """What the evaluate command does with a run folder: its config, the latest checkpoint restored
  into the trainer's state, the eval split evaluated."""
  from research.core.runs import load_config
  from research.core.train import Trainer
  trainer = Trainer(load_config(workdir), workdir)
  step = trainer.checkpointer.latest_step()
  restored, _ = trainer.checkpointer.restore(step, trainer.checkpoint_target())
  scalars, _ = trainer.evaluate(restored["state"])
  trainer.checkpointer.close()
  return step, trainer, scalars


def test_import_weights_writes_a_run_that_evaluates_as_torchvision(tmp_path, data_dir, capsys):
  """The command's folder: an imagenet2012 config with torchvision's preprocessing, and a checkpoint
  the evaluate path restores. Pointed at 40 `digits` (grey 8x8 digits as RGB, resize 36 / crop 32 for
  speed), its eval loss and accuracy equal torchvision's on the same preprocessed images (VGG-11 with
  BatchNorm: the smallest model with batch_stats to compile)."""
  ref = _model("vgg11_bn")
  torch.save(ref.state_dict(), tmp_path / "weights.pth")
  out = str(tmp_path / "run")
  assert import_weights.main(["--arch", "vgg11_bn", "--weights", str(tmp_path / "weights.pth"), "--out", out]) == 0
  assert f"{sum(p.numel() for p in ref.parameters()):,} parameters, {NUM_CLASSES} classes" in capsys.readouterr().out
  with open(os.path.join(out, "config.json")) as f:
    config = json.load(f)
  assert config["model"]["name"] == "vgg11_bn" and config["dataset"]["name"] == "imagenet2012"
  task = config["task"]
  assert (task["num_classes"], task["image_size"], task["eval_resize"]) == (NUM_CLASSES, 224, 256)
  assert (tuple(task["mean"]), tuple(task["std"])) == (IMAGENET_MEAN, IMAGENET_STD)
  variables, _ = convert("vgg11_bn", ref.state_dict())
  loaded = load_variables(out)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)

  config["dataset"].update(name="digits", data_dir=data_dir, train_split="train", eval_split="test[:40]", num_workers=0,
                           cache_mb=64)
  config["task"].update(channels=3, image_size=32, eval_resize=36)
  config["batch_size"] = 40
  with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(config, f)
  step, trainer, scalars = _evaluate(out)
  assert step == 0
  examples = [trainer.task.preprocess_eval(trainer.eval_source[i]) for i in range(len(trainer.eval_source))]
  logits = torch.tensor(_torch_logits(ref, np.stack([e["image"] for e in examples])))
  labels = torch.tensor(np.array([e["label"] for e in examples], np.int64))
  assert scalars["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-4)
  assert scalars["accuracy"] == pytest.approx(float((logits.argmax(-1) == labels).float().mean()), abs=1e-6)

  assert import_weights.main(["--arch", "vgg11_bn", "--weights", str(tmp_path / "weights.pth"), "--out", out]) == 2
  assert "already exists" in capsys.readouterr().err


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """{arch: (import_weights folder, converted variables)} for ResNet-50 and VGG-16 (16-wide fc)."""
  folders = {}
  for arch in ("resnet50", "vgg16"):
    directory = tmp_path_factory.mktemp(arch)
    ref = _model(arch)
    torch.save(ref.state_dict(), directory / "weights.pth")
    assert import_weights.main(["--arch", arch, "--weights", str(directory / "weights.pth"),
                                "--out", str(directory / "run")]) == 0
    folders[arch] = (str(directory / "run"), convert(arch, ref.state_dict())[0])
  return folders


def _flat(tree):
  return {"/".join(str(k.key) for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


_BACKBONE_CONFIGS = [
    ("faster_rcnn_r50_fpn_coco", "resnet50", {}, {"num_classes": 3}),
    ("multitask_coco", "resnet50", {},
     {"heads": ("detection", "captioning"), "num_classes": {"detection": 3}, "vocab_size": 11}),
    ("deeplabv3_r50_voc2012", "resnet50", {"aspp_features": 8}, {"num_classes": 3}),
    ("fcn8s_voc2012", "vgg16", {"fc_channels": 16}, {"num_classes": 3}),
    ("faster_rcnn_vgg16_voc07", "vgg16", {"box_head_hidden": 16}, {"num_classes": 3})]


@pytest.mark.parametrize("name,arch,overrides,extra", _BACKBONE_CONFIGS, ids=[c[0] for c in _BACKBONE_CONFIGS])
def test_config_init_from_loads_the_imagenet_backbone(imported, name, arch, overrides, extra):
  """config.init_from with the config's own renames, on the folder import_weights wrote: every
  backbone array (and VGG's fc1 / fc2 as fc6 / fc7, reshaped) takes the converted ImageNet values;
  only the ImageNet head is left out. Model at 64x64 (VGG's fc layers 16 wide)."""
  workdir, converted = imported[arch]
  config = load_config_file(os.path.join(ROOT, "configs", f"{name}.py"))
  config.model.update(overrides)
  model = build_registered(MODELS, config.model, "model", **extra)
  inputs = {"targets": {"captioning": jnp.zeros((1, 5), jnp.int32)}} if name == "multitask_coco" else {}
  rng = jax.random.PRNGKey(0)
  fresh = jax.eval_shape(lambda: model.init({"params": rng, "dropout": rng}, jnp.zeros((1, 64, 64, 3)),
                                            train=False, **inputs))
  pretrained = {k: v for k, v in load_variables(workdir).items() if k in config.init_from.collections}
  rename = tuple(tuple(r) for r in config.init_from.rename)
  merged, report = merge_pretrained(fresh, pretrained, tuple(config.init_from.reinit), rename)
  merged = _flat(merged)
  head = "params/fc/" if arch == "resnet50" else "params/classifier/fc3/"
  expected = {}
  for path, value in _flat(converted).items():
    if not path.startswith(head):
      for pattern, replacement in rename:
        path = re.sub(pattern, replacement, path)
      expected[path] = value
  assert sorted(report["loaded"]) == sorted(expected)
  for path, value in expected.items():
    np.testing.assert_array_equal(merged[path], value.reshape(merged[path].shape), err_msg=path)
  assert not [p for p in report["reinitialized"] if "/backbone/" in p]
