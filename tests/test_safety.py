"""Safety: a checkpoint whose pickle carries code is refused and the code never runs; tools write
only inside the work dir and the output paths they are given."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detkit.config import load_config
from detkit.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint
from detkit.engine.trainer import Trainer
from detkit.engine.weights import load_weights
from tests.engine.standins import TinyDetector
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "tests" / "engine" / "configs" / "tiny.py"


class RunsCode:
    """Unpickling this calls ``os.system`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_files(tmp_path: Path) -> list[Path]:
    """The same code-carrying checkpoint in torch's zip format, its legacy format, and plain pickle."""
    marker = tmp_path / "code_ran"
    state = {"model": TinyDetector().state_dict(), "payload": RunsCode(marker)}
    paths = [tmp_path / "zip.pth", tmp_path / "legacy.pth", tmp_path / "pickle.pth"]
    torch.save(state, paths[0])
    torch.save(state, paths[1], _use_new_zipfile_serialization=False)
    with open(paths[2], "wb") as f:
        pickle.dump(state, f)
    return paths


def test_the_payload_really_runs_code_when_unpickled_unsafely(tmp_path):
    pytest.importorskip("posix")  # os.system with touch
    path = evil_files(tmp_path)[0]
    torch.load(path, weights_only=False)  # what detkit never does
    assert (tmp_path / "code_ran").exists()


@pytest.mark.parametrize("index", [0, 1, 2], ids=["zip", "legacy", "pickle"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_carrying_code_is_refused_and_the_code_does_not_run(tmp_path, index):
    path = evil_files(tmp_path)[index]
    with pytest.raises(CheckpointError, match=str(path)) as info:
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_weights(TinyDetector(), path)
    with pytest.raises(CheckpointError):
        Trainer(load_config(CFG), work_dir=tmp_path / "work", resume=str(path))
    assert not (tmp_path / "code_ran").exists()
    if index == 0:
        assert "refused to load" in str(info.value) and "posix.system" in str(info.value)


def test_resume_auto_skips_a_checkpoint_carrying_code(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    atomic_save({"model": {}}, work / "iter_2.pth")  # an older one (not resumable: shows the fallback)
    (work / "iter_4.pth").write_bytes(evil_files(tmp_path)[0].read_bytes())
    (work / "last_checkpoint").write_text("iter_4.pth\n")
    with pytest.raises(CheckpointError, match="cannot resume from it") as info:
        Trainer(load_config(CFG), work_dir=work, resume="auto")
    assert "iter_2.pth" in str(info.value)  # it fell back past the refused file to the older one
    assert "refused to load" in (work / "train.log").read_text()
    assert not (tmp_path / "code_ran").exists()


def test_train_test_infer_write_only_inside_the_given_paths(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    work, out = tmp_path / "work", tmp_path / "out"
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((32, 48, 3), np.uint8))
    before = set(tmp_path.iterdir())
    assert load_tool("train").main([str(CFG), "--work-dir", str(work), "--cfg-options", "train.epochs=1"]) == 0
    assert load_tool("test").main([str(CFG), str(work / "epoch_1.pth"), "--device", "cpu", "--no-progress",
                                   "--out", str(out / "results.json")]) == 0
    assert load_tool("infer").main([str(CFG), str(work / "epoch_1.pth"), str(images), "--out", str(out / "infer"),
                                    "--device", "cpu", "--img-size", "64"]) == 0
    assert list(cwd.iterdir()) == []  # nothing in the current directory
    assert set(tmp_path.iterdir()) - before == {work, out}
    assert sorted(p.name for p in images.iterdir()) == ["a.png"]
