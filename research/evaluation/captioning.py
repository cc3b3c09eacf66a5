"""Caption metrics as the coco-caption toolkit computes them: BLEU-1..4 and CIDEr-D.

The scores come from pycocoevalcap's own `Bleu(4)` and `Cider` scorers (install the `eval`
extra): corpus-level BLEU with the closest reference length for the brevity penalty, and CIDEr-D
(coco-caption's "CIDEr": TF-IDF n-grams 1..4 with document frequencies from the references of
the evaluated images, Gaussian length penalty sigma = 6, clipped counts, scaled by 10).

Tokenization: coco-caption runs Stanford's PTBTokenizer (Java, not available here), lowercases
and drops punctuation tokens. We use `research.data.preprocess.Vocabulary.tokenize` instead,
the same rule the captioning vocabulary uses: lowercase, then runs of [a-z0-9'] are words and
every other character separates them. It differs from PTB only on words PTB splits or keeps
whole differently (PTB: "don't" -> "do n't", "t-shirt" stays one token; here: "don't",
"t", "shirt"), which is rare in captions; scores on identical token sequences are identical.

Scores are fractions (BLEU in [0, 1]; CIDEr-D usually in [0, 10]); papers print them x 100.
"""
from __future__ import annotations

from typing import Dict, Hashable, Mapping, Sequence

from research.data.preprocess import Vocabulary

METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider")


def tokenize(text: str) -> str:
  """The caption as space-separated lowercase word tokens (see the module docstring)."""
  return " ".join(Vocabulary.tokenize(text))


def caption_metrics(hypotheses: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
                    ) -> Dict[str, float]:
  """Corpus-level {'bleu_1'.., 'bleu_4', 'cider'} of one generated caption per image against
  that image's reference captions (both raw text, keyed by image id; the same keys)."""
  try:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
  except ImportError as e:
    raise ImportError("caption metrics need pycocoevalcap: pip install -e '.[eval]'") from e
  if set(hypotheses) != set(references):
    raise ValueError("hypotheses and references must cover the same image ids")
  if any(not refs for refs in references.values()):
    raise ValueError("every image needs at least one reference caption")
  res = {k: [tokenize(v)] for k, v in hypotheses.items()}
  gts = {k: [tokenize(r) for r in references[k]] for k in hypotheses}
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  cider, _ = Cider().compute_score(gts, res)
  return {**{f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)}, "cider": float(cider)}
