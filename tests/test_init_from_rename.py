"""init_from.rename: a classifier's parameters load into a composite model's 'backbone' scope."""
import numpy as np
import pytest

from research.core.checkpoint import merge_pretrained


def test_rename_loads_into_backbone_scope_and_no_match_is_an_error():
  fresh = {"params": {"backbone": {"conv1": {"kernel": np.zeros((3, 3))}}, "head": {"kernel": np.zeros(2)}}}
  classifier = {"params": {"conv1": {"kernel": np.ones((3, 3))}, "fc": {"kernel": np.ones(5)}}}
  merged, report = merge_pretrained(fresh, classifier, rename=(("^(params|batch_stats)/", r"\1/backbone/"),))
  np.testing.assert_array_equal(merged["params"]["backbone"]["conv1"]["kernel"], np.ones((3, 3)))
  np.testing.assert_array_equal(merged["params"]["head"]["kernel"], np.zeros(2))
  assert report["loaded"] == ["params/backbone/conv1/kernel"]
  with pytest.raises(ValueError, match="init_from.rename"):
    merge_pretrained(fresh, classifier)
