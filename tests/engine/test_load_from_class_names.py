"""``--load-from`` a checkpoint trained on other class names (in label order): the run says so and goes on."""

from __future__ import annotations

from pathlib import Path

import torch

from detkit.config import instantiate, load_config
from detkit.engine.trainer import Trainer

CFG = Path(__file__).parent / "configs" / "tiny.py"


def _weights(path: Path, names: list[str] | None) -> Path:
    torch.manual_seed(0)
    state = {"model": instantiate(load_config(CFG).model).state_dict()}
    if names is not None:
        state["meta"] = {"class_names": names, "num_classes": len(names)}
    torch.save(state, path)
    return path


def test_load_from_other_names_warns_and_same_names_do_not(tmp_path):
    swapped = _weights(tmp_path / "swapped.pth", ["c1", "c0"])  # the tiny data's classes are c0, c1
    trainer = Trainer(load_config(CFG), work_dir=tmp_path / "a", load_from=str(swapped))
    log = (tmp_path / "a" / "train.log").read_text()
    assert "WARNING initial weights" in log and "the same names in another order" in log
    assert "fine-tuning goes on" in log
    assert trainer.epoch == 0
    for name, names in (("same.pth", ["c0", "c1"]), ("plain.pth", None)):  # same names; no names stored
        work = tmp_path / f"run_{name}"
        Trainer(load_config(CFG), work_dir=work, load_from=str(_weights(tmp_path / name, names)))
        assert "WARNING" not in (work / "train.log").read_text()
