"""build_dataloader is the one loader path: worker set-up, explicit samplers, generators the caller
reseeds, and the evaluation loop's loader (problems found in its workers counted, RNG untouched)."""

from __future__ import annotations

import signal

import pytest
import torch

from detkit.data import CocoDataset, RandomFlip, build_dataloader
from detkit.data.loader import init_worker
from detkit.engine.distributed import InferenceSampler, TrainSampler


def ids_of(loader) -> list[int]:
    return [i for b in loader for i in b["image_ids"].tolist()]


def test_loader_workers_ignore_sigint():
    """Worker set-up of every loader (training, evaluation, tools): Ctrl-C is the parent's to handle."""
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        init_worker(0)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert torch.get_num_threads() == 1
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
        torch.set_num_threads(saved[2])


def test_every_loader_uses_the_one_worker_initialiser(coco_dir):
    ds = CocoDataset(str(coco_dir / "ann.json"), str(coco_dir / "images"))
    assert build_dataloader(ds, batch_size=2, num_workers=1).worker_init_fn is init_worker


def test_an_explicit_sampler_sets_the_order_and_takes_the_epoch(coco_dir):
    ds = CocoDataset(str(coco_dir / "ann.json"), str(coco_dir / "images"))
    sampler = TrainSampler(len(ds), shuffle=True, seed=4, rank=0, world_size=1)
    loader = build_dataloader(ds, batch_size=2, num_workers=0, shuffle=False, sampler=sampler)
    for epoch in range(3):
        loader.set_epoch(epoch)
        assert sampler.epoch == epoch
        expected = [ds.records[i]["image_id"] for i in list(sampler)]
        assert ids_of(loader) == expected
    order = list(InferenceSampler(len(ds), rank=0, world_size=1))
    loader = build_dataloader(ds, batch_size=2, num_workers=0, shuffle=False, sampler=InferenceSampler(len(ds)))
    assert ids_of(loader) == [ds.records[i]["image_id"] for i in order]


def test_a_sampler_with_shuffle_or_distributed_is_refused(coco_dir):
    ds = CocoDataset(str(coco_dir / "ann.json"), str(coco_dir / "images"))
    with pytest.raises(ValueError, match="sampler replaces shuffle"):
        build_dataloader(ds, batch_size=2, sampler=InferenceSampler(len(ds)))


def test_reseeding_the_generator_repeats_the_workers_augmentation(coco_dir):
    """Non-persistent workers draw their seeds from the caller's generator each epoch: reseeding it
    the way the trainer does (seed + epoch) repeats an epoch's augmentation exactly."""
    ds = CocoDataset(str(coco_dir / "ann.json"), str(coco_dir / "images"), pipeline=[RandomFlip(p=0.5)])
    gen = torch.Generator()
    loader = build_dataloader(ds, batch_size=3, num_workers=1, shuffle=False, persistent_workers=False,
                              generator=gen)
    epochs = []
    for seed in (7, 8, 7):
        gen.manual_seed(seed)
        epochs.append(torch.cat([b["gt_boxes"] for b in loader]))
    assert torch.equal(epochs[0], epochs[2])
    flips = [torch.cat([b["gt_boxes"] for b in loader]) for _ in range(12)]  # unseeded draws differ
    assert any(not torch.equal(f, flips[0]) for f in flips)


def test_evaluation_loader_counts_worker_problems_and_leaves_the_rng_alone(bad_corpus):
    """predict_dataset goes through build_dataloader: problems its workers find reach the main
    process's dataset.problems, and torch's global RNG is not drawn from (exact resume needs it)."""
    from detkit.engine.inference import predict_dataset
    from tests.data.test_bad_input import coco

    class NoBoxes(torch.nn.Module):
        def predict(self, batch):
            return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
                    for _ in range(batch["images"].shape[0])]

    ds = coco(bad_corpus, max_size=128)
    expected = dict(bad_corpus.coco_index + bad_corpus.coco_load)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    results = predict_dataset(NoBoxes(), ds, torch.device("cpu"), batch_size=4, num_workers=1, progress=False)
    assert results == []
    assert dict(ds.problems.counts) == expected
    assert torch.equal(torch.get_rng_state(), state)
