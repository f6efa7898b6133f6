from dataclasses import dataclass

import pytest
import torch

from detkit.samplers import PseudoSampler, RandomSampler, SampleResult


@dataclass
class FakeAssign:
    """The two AssignResult fields a sampler reads."""

    pos_mask: torch.Tensor
    ignore_mask: torch.Tensor


def make_assign(pos_rows, ignore_rows):
    return FakeAssign(torch.tensor(pos_rows, dtype=torch.bool), torch.tensor(ignore_rows, dtype=torch.bool))


def test_pseudo_sampler_all_positives_and_non_ignored_negatives():
    a = make_assign([[1, 0, 0, 1], [0, 0, 0, 0]], [[0, 1, 0, 0], [0, 0, 1, 1]])
    s = PseudoSampler().sample(a)
    assert isinstance(s, SampleResult)
    assert s.pos_mask.tolist() == [[True, False, False, True], [False, False, False, False]]
    assert s.neg_mask.tolist() == [[False, False, True, False], [True, True, False, False]]
    assert s.num_pos.tolist() == [2, 0] and s.num_neg.tolist() == [1, 2]


def test_pseudo_sampler_ignore_overlapping_positive_stays_positive():
    a = make_assign([[1, 0]], [[1, 1]])
    s = PseudoSampler().sample(a)
    assert s.pos_mask.tolist() == [[True, False]] and s.neg_mask.tolist() == [[False, False]]


def random_assign(b, n, p_pos, p_ign, seed):
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(b, n, generator=g)
    return FakeAssign(r < p_pos, (r >= p_pos) & (r < p_pos + p_ign))


def test_random_sampler_counts_per_image_and_subsets():
    a = random_assign(4, 500, 0.05, 0.1, 0)
    a.pos_mask[3] = False  # an image without positives
    s = RandomSampler(num=64, pos_fraction=0.25, seed=1).sample(a)
    avail_pos = a.pos_mask.sum(1)
    exp_pos = avail_pos.clamp(max=16)
    assert torch.equal(s.num_pos, exp_pos)
    assert torch.equal(s.num_neg, 64 - exp_pos)
    assert not (s.pos_mask & ~a.pos_mask).any()
    assert not (s.neg_mask & (a.pos_mask | a.ignore_mask)).any()
    assert s.num_pos[3] == 0 and s.num_neg[3] == 64


def test_random_sampler_takes_all_when_fewer_available():
    a = make_assign([[1, 0, 0, 0, 0, 1]], [[0, 0, 1, 0, 0, 0]])
    s = RandomSampler(num=100, pos_fraction=0.5).sample(a)
    assert s.pos_mask.tolist() == a.pos_mask.tolist()
    assert s.neg_mask.tolist() == [[False, True, False, True, True, False]]


def test_random_sampler_neg_pos_upper_bound():
    a = make_assign([[1, 1, 0, 0, 0, 0, 0, 0, 0, 0], [0] * 10], [[0] * 10, [0] * 10])
    s = RandomSampler(num=8, pos_fraction=0.5, neg_pos_ub=1.5, seed=0).sample(a)
    # Image 0: 2 positives -> at most int(1.5 * 2) = 3 negatives; image 1: max(1, 0) -> 1.
    assert s.num_pos.tolist() == [2, 0] and s.num_neg.tolist() == [3, 1]


def test_random_sampler_seeded_reproducible_and_seed_dependent():
    a = random_assign(2, 300, 0.3, 0.0, 3)
    s1 = RandomSampler(num=32, pos_fraction=0.5, seed=7).sample(a)
    s2 = RandomSampler(num=32, pos_fraction=0.5, seed=7).sample(a)
    s3 = RandomSampler(num=32, pos_fraction=0.5, generator=torch.Generator().manual_seed(8)).sample(a)
    assert torch.equal(s1.pos_mask, s2.pos_mask) and torch.equal(s1.neg_mask, s2.neg_mask)
    assert not torch.equal(s1.pos_mask, s3.pos_mask)


def test_random_sampler_is_uniform_over_candidates():
    a = make_assign([[1] * 10 + [0] * 10], [[0] * 20])
    sampler = RandomSampler(num=4, pos_fraction=0.5, seed=0)
    counts = torch.zeros(20)
    trials = 2000
    for _ in range(trials):
        s = sampler.sample(a)
        counts += s.pos_mask[0].float() + s.neg_mask[0].float()
    # Each of 10 positives is drawn with p = 2/10, each negative with p = 2/10.
    freq = counts / trials
    assert torch.all((freq - 0.2).abs() < 0.04), freq


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num=0, pos_fraction=0.5), "num"),
        (dict(num=4, pos_fraction=1.5), "pos_fraction"),
        (dict(num=4, pos_fraction=0.5, neg_pos_ub=-2), "neg_pos_ub"),
    ],
)
def test_random_sampler_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandomSampler(**kwargs)
