"""Tiny stand-ins for a dataset and a detector, for engine tests that must not depend on the
data and model parts. They follow the batch and Detector contracts of docs/design.md."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn


class Mosaic:
    """Stand-in for a switchable transform the trainer switches off (``set_enabled``; only ``enabled`` matters)."""

    def __init__(self) -> None:
        self.enabled = True

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled


class TinyDataset(torch.utils.data.Dataset):
    """``n`` images of ``size`` px with one box each; a random flip draws from python's RNG."""

    def __init__(self, n: int = 8, size: int = 64, num_classes: int = 2, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, size, size, generator=g)
        xy = torch.randint(0, size // 2, (n, 2), generator=g).float()
        wh = torch.randint(8, size // 2, (n, 2), generator=g).float()
        self.boxes = torch.cat([xy, xy + wh], 1)  # (n, 4) xyxy
        self.labels = torch.randint(0, num_classes, (n,), generator=g)
        self.size = size
        self.cat_ids = [10 + c for c in range(num_classes)]
        self.class_names = [f"c{c}" for c in range(num_classes)]
        self.transforms = [Mosaic()]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        img, box = self.images[i], self.boxes[i].clone()
        if random.random() < 0.5:  # augmentation randomness from the global python RNG
            img = img.flip(-1)
            box = torch.stack([self.size - box[2], box[1], self.size - box[0], box[3]])
        return {"image": img, "box": box, "label": self.labels[i], "id": i + 1}

    def coco_dict(self) -> dict:
        anns = []
        for i, (b, c) in enumerate(zip(self.boxes.tolist(), self.labels.tolist())):
            anns.append({"id": i + 1, "image_id": i + 1, "category_id": self.cat_ids[c], "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        return {"images": [{"id": i + 1, "width": self.size, "height": self.size} for i in range(len(self))],
                "annotations": anns,
                "categories": [{"id": c, "name": n} for c, n in zip(self.cat_ids, self.class_names)]}


def tiny_collate(items: list[dict]) -> dict:
    b = len(items)
    return {
        "images": torch.stack([it["image"] for it in items]),
        "gt_boxes": torch.stack([it["box"] for it in items]).reshape(b, 1, 4),
        "gt_labels": torch.stack([it["label"] for it in items]).reshape(b, 1),
        "gt_mask": torch.ones(b, 1, dtype=torch.bool),
        "image_ids": torch.tensor([it["id"] for it in items]),
        "ori_sizes": torch.tensor([list(it["image"].shape[-2:]) for it in items]),
    }


class TinyHead(nn.Module):
    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.out = nn.Conv2d(channels, 4 + num_classes, 1)
        self.assigner = "initial"


class TinyDetector(nn.Module):
    """Global-pooled conv net predicting one box and class scores per image."""

    def __init__(self, num_classes: int = 2, width: int = 8) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.SiLU(),
                                      nn.Conv2d(width, width, 3, stride=2, padding=1))
        self.head = TinyHead(width, num_classes)
        self.num_classes = num_classes
        self.size_divisor = 32

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head.out(self.backbone(images)).mean((2, 3))  # (B, 4 + C)

    def loss(self, batch: dict) -> dict:
        out = self(batch["images"])
        size = batch["images"].shape[-1]
        box = torch.sigmoid(out[:, :4]) * size
        target = F.one_hot(batch["gt_labels"][:, 0], self.num_classes).float()
        return {"loss_box": F.l1_loss(box, batch["gt_boxes"][:, 0]) / size,
                "loss_cls": F.binary_cross_entropy_with_logits(out[:, 4:], target),
                "stat_pos_per_gt": torch.tensor(1.0)}

    @torch.no_grad()
    def predict(self, batch: dict) -> list[dict]:
        out = self(batch["images"])
        size = batch["images"].shape[-1]
        boxes = torch.sigmoid(out[:, :4]) * size
        boxes = torch.cat([boxes[:, :2].minimum(boxes[:, 2:]), boxes[:, :2].maximum(boxes[:, 2:])], 1)
        scores, labels = torch.sigmoid(out[:, 4:]).max(1)
        return [{"boxes": boxes[i : i + 1], "scores": scores[i : i + 1], "labels": labels[i : i + 1]}
                for i in range(len(out))]


class PassThroughSwitch:
    """A switchable transform of any name: passes samples through, records ``set_enabled`` calls."""

    def __init__(self) -> None:
        self.enabled = True
        self.calls: list[bool] = []

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled
        self.calls.append(enabled)

    def __call__(self, sample: dict) -> dict:
        return sample
