"""Captioning: decoding (beam 1 == greedy, beam search vs a hand-made chain), coco-caption metrics,
the masked loss, the Show-and-Tell model, and a short training run through the core."""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.models  # noqa: F401
from research.config_sections import model_config, task_config
from research.core.config import default_config
from research.core.metrics import read_metrics
from research.core.registry import MODELS
from research.core.train import train_and_evaluate
from research.evaluation.captioning import caption_metrics, tokenize
from research.models.captioning import decoding
from research.models.captioning.show_tell import DECODER_PARAMS, FREEZE_ENCODER
from research.tasks.captioning import masked_cross_entropy

PAD, BOS, EOS, A, B, C = range(6)


def _random_rnn(vocab: int = 9, hidden: int = 8, seed: int = 0):
  """A fixed random recurrent step function (state h [B, hidden]) with a strong EOS bias."""
  rng = np.random.default_rng(seed)
  embed, rec, out = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in
                     ((vocab, hidden), (hidden, hidden), (hidden, vocab)))
  bias = jnp.zeros(vocab).at[EOS].set(0.5)

  def step(h, tokens):
    h = jnp.tanh(h @ rec + embed[tokens])
    return 2.0 * h @ out + bias, h

  return step


def _chain(table: dict):
  """A Markov chain over 6 tokens as a step function: next-token probabilities by the last token."""
  probs = np.full((6, 6), 1e-6)
  for prev, row in table.items():
    for token, p in row.items():
      probs[prev, token] = p
  logits = jnp.asarray(np.log(probs / probs.sum(-1, keepdims=True)), jnp.float32)
  return lambda state, tokens: (logits[tokens], state)


def test_beam_search_with_one_beam_is_greedy_decoding():
  step = _random_rnn()
  h0 = jnp.asarray(np.random.default_rng(1).normal(size=(16, 8)), jnp.float32)
  greedy = jax.jit(lambda h: decoding.greedy_decode(step, h, 16, 12, BOS, EOS, PAD))(h0)
  beam, _ = jax.jit(lambda h: decoding.beam_search(step, h, 16, 12, BOS, EOS, PAD, beam_size=1))(h0)
  np.testing.assert_array_equal(beam[:, 0], greedy)
  finished = np.asarray(greedy == EOS)
  assert finished.any(axis=1).sum() >= 4 and (~finished.any(axis=1)).sum() >= 1  # both kinds of row
  for row in np.asarray(greedy):
    if EOS in row:
      end = list(row).index(EOS)
      assert (row[end + 1:] == PAD).all() and PAD not in row[:end] and BOS not in row[:end]


def test_beam_search_beats_greedy_on_a_chain_and_scores_are_log_probabilities():
  # Greedy takes A (0.6) and then ends (0.3): 0.18. Beam search finds B (0.4) then EOS (0.9): 0.36.
  step = _chain({BOS: {A: 0.6, B: 0.4}, A: {EOS: 0.3, A: 0.25, B: 0.25, C: 0.2}, B: {EOS: 0.9, C: 0.1},
                 C: {EOS: 1.0}})
  state = jnp.zeros((2, 1))
  greedy = decoding.greedy_decode(step, state, 2, 5, BOS, EOS, PAD)
  np.testing.assert_array_equal(greedy[0], [A, EOS, PAD, PAD, PAD])
  tokens, scores = decoding.beam_search(step, state, 2, 5, BOS, EOS, PAD, beam_size=2)
  np.testing.assert_array_equal(tokens[0], [[B, EOS, PAD, PAD, PAD], [A, EOS, PAD, PAD, PAD]])
  np.testing.assert_allclose(scores[0], np.log([0.36, 0.18]), rtol=1e-4)


def test_length_penalty_prefers_longer_captions():
  # Ending at once: 0.5 (length 1). A B EOS: 0.5 * 0.9 * 0.9 = 0.405 (length 3).
  step = _chain({BOS: {EOS: 0.5, A: 0.5}, A: {B: 0.9, C: 0.1}, B: {EOS: 0.9, C: 0.1}, C: {EOS: 1.0}})
  state = jnp.zeros((1, 1))
  raw, _ = decoding.beam_search(step, state, 1, 4, BOS, EOS, PAD, beam_size=2)
  np.testing.assert_array_equal(raw[0, 0], [EOS, PAD, PAD, PAD])
  normalized, scores = decoding.beam_search(step, state, 1, 4, BOS, EOS, PAD, beam_size=2, length_penalty=1.0)
  np.testing.assert_array_equal(normalized[0, 0], [A, B, EOS, PAD])
  np.testing.assert_allclose(scores[0], [np.log(0.405) / 3, np.log(0.5)], rtol=1e-4)


def test_caption_metrics_equal_coco_caption_scorers():
  from pycocoevalcap.bleu.bleu import Bleu
  from pycocoevalcap.cider.cider import Cider
  hyps = {1: "A red circle above a square.", 2: "two shapes: a blue square and a circle",
          3: "a small green triangle", 4: "A white square on a plain background"}
  refs = {1: ["a red circle below a blue square", "a red circle and a blue square"],
          2: ["two shapes: a blue square and a green circle", "a blue square, a green circle"],
          3: ["a small green triangle on the left", "a green triangle"],
          4: ["a large white square", "a white square on a noisy background", "a white square"]}
  ours = caption_metrics(hyps, refs)
  res = {k: [tokenize(v)] for k, v in hyps.items()}
  gts = {k: [tokenize(r) for r in v] for k, v in refs.items()}
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  cider, _ = Cider().compute_score(gts, res)
  assert [ours[f"bleu_{n}"] for n in range(1, 5)] == pytest.approx(bleu, abs=1e-12)
  assert ours["cider"] == pytest.approx(cider, abs=1e-12)
  assert tokenize("A red circle, above a square.") == "a red circle above a square"


def test_bleu_of_identical_captions_is_one_and_a_hand_checked_case():
  same = {1: "a small red circle in the center", 2: "two squares and a blue triangle"}
  scores = caption_metrics(same, {k: [v] for k, v in same.items()})
  assert [scores[f"bleu_{n}"] for n in range(1, 5)] == pytest.approx([1.0] * 4, abs=1e-6)
  # Hypothesis 6 words, reference 7: matches 5/6 unigrams, 2/5 bigrams, 1/4 trigrams, 0/3 4-grams.
  scores = caption_metrics({1: "a red circle above a square"}, {1: ["a red circle below a blue square"]})
  bp = np.exp(1 - 7 / 6)
  assert scores["bleu_1"] == pytest.approx(bp * 5 / 6, rel=1e-6)
  assert scores["bleu_2"] == pytest.approx(bp * (5 / 6 * 2 / 5) ** (1 / 2), rel=1e-6)
  assert scores["bleu_3"] == pytest.approx(bp * (5 / 6 * 2 / 5 * 1 / 4) ** (1 / 3), rel=1e-6)
  assert scores["bleu_4"] < 1e-2  # no 4-gram matches (coco-caption smooths 0 to 1e-9)


def test_masked_cross_entropy_ignores_padding():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(3, 6, 10)), jnp.float32)
  targets = jnp.asarray([[5, 6, 7, EOS, PAD, PAD], [8, EOS, PAD, PAD, PAD, PAD], [4, 4, 4, 4, 4, EOS]])
  weights = targets != PAD
  total, count = masked_cross_entropy(logits, targets, weights)
  changed = jnp.where(weights[..., None], logits, 1e4 * rng.normal(size=logits.shape))
  np.testing.assert_allclose(masked_cross_entropy(changed, targets, weights)[0], total, rtol=1e-6)
  logp = np.asarray(jax.nn.log_softmax(logits))
  expected = [-logp[n, t, targets[n, t]] for n in range(3) for t in range(6) if targets[n, t] != PAD]
  assert float(count) == len(expected) == 12
  assert float(total / count) == pytest.approx(np.mean(expected), rel=1e-5)


@pytest.fixture(scope="module", params=[False, True], ids=["image_first", "image_every_step"])
def show_tell(request):
  model = MODELS.build("show_tell", vocab_size=12, embed_dim=16, hidden_size=24, num_layers=2,
                       image_every_step=request.param)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(3, 32, 32, 3)), jnp.float32)
  tokens = jnp.asarray([[BOS, 5, 6, 7, EOS, PAD], [BOS, 8, EOS, PAD, PAD, PAD], [BOS, 4, 9, 10, 11, EOS]])
  return model, jax.jit(model.init)(jax.random.PRNGKey(0), images, tokens), images, tokens


def test_show_tell_teacher_forcing_matches_step_by_step_decoding(show_tell):
  model, variables, images, tokens = show_tell
  logits = jax.jit(lambda v, i, t: model.apply(v, i, t))(variables, images, tokens)
  assert logits.shape == (3, 5, 12)
  state = model.apply(variables, images, method="start")
  step = jax.jit(lambda v, s, t: model.apply(v, s, t, method="decode_step"))
  for t in range(5):
    step_logits, state = step(variables, state, tokens[:, t])
    np.testing.assert_allclose(step_logits, logits[:, t], atol=1e-5)
  # Causal: changing a later token never changes earlier logits.
  changed = jax.jit(lambda v, i, t: model.apply(v, i, t))(variables, images, tokens.at[:, 4:].set(3))
  np.testing.assert_allclose(changed[:, :4], logits[:, :4], atol=1e-6)


def test_show_tell_beam_one_equals_greedy(show_tell):
  model, variables, images, _ = show_tell
  state = model.apply(variables, images, method="start")
  step = lambda s, t: model.apply(variables, s, t, method="decode_step")  # noqa: E731
  greedy = jax.jit(lambda s: decoding.greedy_decode(step, s, 3, 8, BOS, EOS, PAD))(state)
  beam, _ = jax.jit(lambda s: decoding.beam_search(step, s, 3, 8, BOS, EOS, PAD, beam_size=1))(state)
  np.testing.assert_array_equal(beam[:, 0], greedy)


def test_show_tell_encoder_has_the_classifier_parameter_paths():
  """So config.init_from loads an ImageNet classification run into the encoder as it is."""
  images, tokens = jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 6), jnp.int32)
  ours = jax.eval_shape(MODELS.build("show_tell", vocab_size=12, backbone="resnet18").init,
                        jax.random.PRNGKey(0), images, tokens)
  theirs = jax.eval_shape(MODELS.build("resnet18").init, jax.random.PRNGKey(0), images)
  decoder = set(DECODER_PARAMS)
  assert set(ours["params"]) - set(theirs["params"]) == decoder
  assert set(theirs["params"]) - set(ours["params"]) == {"fc"}
  assert re.search(FREEZE_ENCODER, "layer1_0/conv1/kernel") and not re.search(FREEZE_ENCODER, "lstm/cell")
  shapes = lambda tree: jax.tree_util.tree_map(lambda x: x.shape, tree)  # noqa: E731
  for collection in ("params", "batch_stats"):
    mine = {k: v for k, v in ours[collection].items() if k not in decoder}
    assert shapes(mine) == shapes({k: v for k, v in theirs[collection].items() if k != "fc"})


def test_show_tell_trains_on_shapes(data_dir, tmp_path):
  config = default_config()
  config.model = model_config("show_tell", embed_dim=32, hidden_size=64, dropout=0.0, image_every_step=True)
  config.dataset.name = "shapes"
  config.dataset.eval_split = "validation[:40]"
  config.dataset.data_dir = data_dir
  config.task = task_config("captioning", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), beam_size=2,
                            augment=())
  config.batch_size = 16
  config.eval_batch_size = 32  # 40 validation images: one full batch and one of 8
  config.num_train_steps = 40
  config.log_every_steps = 10
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-2
  config.compilation_cache_dir = ""
  result = train_and_evaluate(config, str(tmp_path))
  losses = [r["train/loss"] for r in read_metrics(str(tmp_path)) if "train/loss" in r]
  assert losses[-1] < 0.9 * losses[0], losses  # means over steps 1-10 and 31-40
  assert 0.0 < result["eval/bleu_1"] <= 1.0 and result["eval/cider"] >= 0.0
  with open(tmp_path / "eval" / "step_40.json") as f:
    artifacts = json.load(f)
  assert len(artifacts["captions"]) == 40 and len(artifacts["examples"][0]["references"]) == 5
  assert (tmp_path / "eval" / "step_40" / "captions.png").exists()
  from tests.core_helpers import predict_and_inspect
  record, inspected = predict_and_inspect(str(tmp_path), str(tmp_path / "look"))
  # The beam ranks by summed log-probability (length_penalty 0), so on a noise image a 40-step model
  # may rank `eos` first: an empty beam caption is a valid answer; every word must be the vocabulary's.
  from research.inspection import predict
  words = set(predict.Run.load(str(tmp_path)).task.vocab.tokens)
  assert record["beam_size"] == 3 and record["greedy"] and isinstance(record["beam"], str)
  assert set(f"{record['greedy']} {record['beam']}".split()) <= words, record
  assert inspected["activations"] and inspected["first_conv"]
