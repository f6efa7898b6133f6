"""NMS-free (one-to-one head) selection: ``select_top_pairs`` and the ``nms=False`` entry points.

The rule is Ultralytics' end-to-end ``Detect.postprocess`` (top ``max_det`` priors by best score, then
the top ``max_det`` of their (prior, class) pairs), written here as a slow reference, with exact ties
ordered by prior then class.
"""

import pytest
import torch

from detkit.coders import DistanceCoder
from detkit.models.postprocess import postprocess_decoded_single, postprocess_single, select_top_pairs


def two_stage_reference(scores: torch.Tensor, k: int) -> tuple[list[int], list[int], list[float]]:
    """Ultralytics' rule with plain Python sorting (ties: prior, then class): (rows, labels, scores)."""
    n, c = scores.shape
    k = min(k, n)
    best = scores.max(dim=1).values.tolist()
    priors = sorted(range(n), key=lambda i: (-best[i], i))[:k]
    pairs = sorted(((scores[i, j].item(), i, j) for i in priors for j in range(c)), key=lambda t: (-t[0], t[1], t[2]))
    top = pairs[:k]
    return [p[1] for p in top], [p[2] for p in top], [p[0] for p in top]


def test_several_classes_of_one_prior_and_ties_by_prior_then_class():
    scores = torch.tensor([
        [0.20, 0.70, 0.70],  # prior 0: two classes tied at 0.7
        [0.70, 0.10, 0.90],  # prior 1: its best 0.9 and a 0.7 tied with prior 0's
        [0.05, 0.05, 0.05],  # below the threshold
        [0.30, 0.60, 0.10],
    ])
    rows, labels, top = select_top_pairs(scores, 0.1, True, 5)
    assert rows.tolist() == [1, 0, 0, 1, 3]
    assert labels.tolist() == [2, 1, 2, 0, 1]
    assert top.tolist() == pytest.approx([0.9, 0.7, 0.7, 0.7, 0.6])
    # best class only (Ultralytics' agnostic selection); prior 0's tie goes to the lower class
    rows, labels, top = select_top_pairs(scores, 0.1, False, 5)
    assert (rows.tolist(), labels.tolist()) == ([1, 0, 3], [2, 1, 1])


def test_fewer_candidates_than_k_and_threshold_is_strict():
    scores = torch.tensor([[0.5, 0.25], [0.25, 0.0]])
    rows, labels, top = select_top_pairs(scores, 0.25, True, 300)
    assert (rows.tolist(), labels.tolist(), top.tolist()) == ([0], [0], [0.5])
    rows, labels, top = select_top_pairs(scores, 0.0, True, 300)
    assert (rows.tolist(), labels.tolist()) == ([0, 0, 1], [0, 1, 0])
    empty = select_top_pairs(torch.zeros(0, 4), 0.0, True, 300)
    assert [t.numel() for t in empty] == [0, 0, 0]


def test_many_exact_ties_keep_the_lowest_priors_in_order():
    # 2,000 priors all at 0.5 on class 1 and 0.25 on class 0: the 300 kept are priors 0..299, in order
    # (torch.topk, the old selection, returns tied values in no particular order).
    scores = torch.tensor([0.25, 0.5]).repeat(2000, 1)
    rows, labels, _ = select_top_pairs(scores, 0.001, True, 300)
    assert rows.tolist() == list(range(300)) and labels.unique().tolist() == [1]
    det = postprocess_decoded_single(torch.arange(8000.0).view(2000, 4), scores, nms=False)
    assert det["boxes"][:, 0].tolist() == [4.0 * i for i in range(300)]


def test_ties_at_the_prior_cut_are_all_considered():
    # priors 0..2 share the best score 0.8; with k=2 the cut ties: prior 2's class-0 0.7 beats the
    # second pair of prior 0 or 1 only if prior 2 is kept in the pool
    scores = torch.tensor([[0.8, 0.1], [0.8, 0.1], [0.7, 0.8]])
    rows, labels, _ = select_top_pairs(scores, 0.0, True, 2)
    assert (rows.tolist(), labels.tolist()) == ([0, 1], [0, 0])
    rows, labels, _ = select_top_pairs(scores, 0.0, True, 4)
    assert (rows.tolist(), labels.tolist()) == ([0, 1, 2, 2], [0, 0, 1, 0])


@pytest.mark.parametrize(("n", "c", "k"), [(500, 7, 300), (200, 80, 300), (40, 3, 300), (1000, 2, 10)])
def test_equals_ultralytics_two_stage_rule(n, c, k):
    # with fewer priors than max_det (n=200, 40) Ultralytics keeps as many detections as priors: so does detkit
    scores = torch.rand(n, c, generator=torch.Generator().manual_seed(n + c))
    boxes = torch.arange(n, dtype=torch.float32)[:, None].expand(n, 4)  # box i holds i: the row kept
    det = postprocess_decoded_single(boxes, scores, score_thr=0.0, max_per_img=k, nms=False)
    ref_rows, ref_labels, ref_scores = two_stage_reference(scores, k)
    assert len(ref_rows) == min(n, k)
    assert det["boxes"][:, 0].long().tolist() == ref_rows and det["labels"].tolist() == ref_labels
    assert det["scores"].tolist() == ref_scores


def test_raw_and_decoded_paths_agree_without_nms():
    g = torch.Generator().manual_seed(0)
    n, c = 600, 5
    centres = torch.rand(n, 2, generator=g) * 320
    priors = torch.cat([centres, centres], dim=1)
    strides = torch.full((n,), 8.0)
    box = torch.rand(n, 4, generator=g) * 4
    cls = torch.randn(n, c, generator=g) * 3
    coder = DistanceCoder()
    settings = dict(score_thr=0.05, max_per_img=100, nms=False)
    raw = postprocess_single(box, cls, None, priors, strides, coder, **settings)
    boxes = coder.decode(priors, box, strides)
    decoded = postprocess_decoded_single(boxes, cls.sigmoid(), **settings)
    assert len(raw["scores"]) == 100
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(raw[key], decoded[key]), key
    ref_rows, ref_labels, _ = two_stage_reference(cls.sigmoid(), 100)
    assert raw["labels"].tolist() == ref_labels
    assert torch.equal(raw["boxes"], boxes[ref_rows])
    # nms_pre below max_per_img caps the detections, as it does with NMS
    assert len(postprocess_decoded_single(boxes, cls.sigmoid(), nms_pre=7, **settings)["scores"]) == 7
