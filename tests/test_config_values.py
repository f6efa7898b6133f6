"""Every config value checked when the config loads (issue 24, item 4): constructor arguments against
their annotations, preset names where an assigner is expected, numbers within their settings' domains,
the ``data`` section typed, the assigner schedule's entries. Each case is one ``ConfigError`` line
naming the key (and the override that set it), and exit status 2 through the tools."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from torch import nn

from detkit.assigners import ATSSAssigner, MinPositives, TaskAlignedAssigner
from detkit.assigners.presets import build_preset
from detkit.cli import cli_message
from detkit.config import TARGET_KEY, ConfigError, L, format_config, load_config, parse_value
from detkit.engine.settings import ScheduleSettings
from detkit.schema import SettingError, check_value
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[1]
CFG = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny.py")  # real model parts; train.epochs=2
PRESETS = ("atss, iou, grid, yolov5, fcos, simota, simota-yolox, tal, tal-ultralytics, tal-e2e-ultralytics, dsl, "
           "dsl-mmyolo")
ASSIGNER = f"expected a lazy call of an assigner (L(ATSSAssigner)(...)) or a preset: {PRESETS}"

# (overrides on CFG, the error after "<CFG>: "; " (from --cfg-options ...)" is added where one override set the key)
BAD_OVERRIDES = [
    # constructor arguments against their annotations
    (["model.head.num_classes=five"], "model.head.num_classes: expected int, got 'five' (str)"),
    (["model.backbone.widen_factor=abc"], "model.backbone.widen_factor: expected float, got 'abc' (str)"),
    (["model.head.loss=ATSSAssigner()"], "model.head.loss: expected Module or None, got a lazy call of ATSSAssigner"),
    (["model.neck.in_channels=[64, 'x']"], "model.neck.in_channels[1]: expected int, got 'x' (str)"),
    # a string where a component is expected: a preset or nothing
    (["model.head.loss.assigner=nope"], f"model.head.loss.assigner: 'nope' is not an assigner preset; {ASSIGNER}"),
    (["model.head.loss.assigner=3"], f"model.head.loss.assigner: {ASSIGNER}, got 3 (int)"),
    (["model.head.loss.assigner=PAN()"],
     f"model.head.loss.assigner: PAN is not an assigner (it has no assign method); {ASSIGNER}"),
    # numbers within their domains
    (["train.optimizer.lr=1e400"], "train.optimizer.lr: must be a finite number > 0, got inf"),
    (["train.optimizer.lr=nan"], "train.optimizer.lr: expected float or Tensor, got 'nan' (str)"),
    (["train.optimizer.weight_decay=1e400"], "train.optimizer.weight_decay: must be a finite number >= 0, got inf"),
    (["train.optimizer=AdamW(eps=0)"], "train.optimizer.eps: must be a finite number > 0, got 0.0"),
    (["train.optimizer=AdamW(betas=(0.9, 1.5))"], "train.optimizer.betas: must be in [0, 1), got (0.9, 1.5)"),
    (["train.optimizer.momentum=1.0"], "train.optimizer.momentum: must be in [0, 1), got 1.0"),
    (["train.grad_clip=-1"],
     "train.grad_clip: must be a finite max gradient norm > 0, or 0 / None for no clipping, got -1.0"),
    (["train.grad_clip=1e400"],
     "train.grad_clip: must be a finite max gradient norm > 0, or 0 / None for no clipping, got inf"),
    (["train.ema.tau=-1"], "train.ema.tau: must be a finite number > 0, got -1.0"),
    (["schedule.lr.warmup_ratio=2"], "schedule.lr.warmup_ratio: must be in [0.0, 1.0], got 2"),
    (["schedule.lr.min_lr_ratio=-0.1"], "schedule.lr.min_lr_ratio: must be in [0.0, 1.0], got -0.1"),
    (["schedule.lr.warmup_epochs=-1"], "schedule.lr.warmup_epochs: must be a finite number >= 0.0, got -1"),
    (["schedule.lr.warmup_iters=-1"], "schedule.lr.warmup_iters: must be a finite number >= 0, got -1"),
    (["schedule.lr.warmup_bias_lr=1e400"], "schedule.lr.warmup_bias_lr: must be a finite number >= 0.0, got inf"),
    (["schedule.lr.warmup_momentum=1.0"], "schedule.lr.warmup_momentum: must be in [0, 1) or None, got 1.0"),
    (["schedule.lr.gamma=0"], "schedule.lr.gamma: must be > 0, got 0"),
    (["schedule.lr.steps=[-1]"], "schedule.lr.steps: must be epochs >= 0, got (-1,)"),
    # the data section
    (["data.train.batch_size=2.5"], "data.train.batch_size: expected int or None, got 2.5 (float)"),
    (["data.val.num_workers=-1"], "data.val.num_workers: must be >= 0, got -1"),
    (["data.img_size=0"], "data.img_size: must be >= 1 (pixels), got 0"),
    (["data.num_classes=3"], "data.num_classes: is 3 but data.class_names has 5 names"),
    (["data.val=ShapesDataset(root='x')"],
     "data.val: expected dict(dataset, batch_size, num_workers), got a lazy call of ShapesDataset"),
    (["data.train.dataset='coco'"], "data.train.dataset: expected a lazy call of a dataset class such as "
                                    "L(CocoDataset)(ann_file=..., img_dir=...), got 'coco'"),
    # a whole section replaced by something else (a data.yaml given where --data belongs)
    (["data=/x/data.yaml"], "data: expected a section (a dict of settings), got '/x/data.yaml' (str); "
                            "train or evaluate on a dataset file with --data PATH"),
    (["train=3"], "train: expected a section (a dict of settings), got 3 (int)"),
    # the assigner switches
    (["schedule.assigner_switches=[(0, ATSSAssigner()), (1, 3)]"],
     f"schedule.assigner_switches[1][1]: {ASSIGNER}, got 3 (int)"),
    (["schedule.assigner_switches=[(5, 'atss')]"],
     "schedule.assigner_switches[0][0]: epoch 5 is outside this run's epochs 0..1 (0-based, train.epochs=2)"),
    (["schedule.assigner_switches=[(1, 'tal'), (0, 'atss')]"],
     "schedule.assigner_switches[1][0]: entries must be in increasing epoch order, got epoch 0 after 1"),
    (["schedule.assigner_switches=[(0, 'nope')]"],
     f"schedule.assigner_switches[0][1]: 'nope' is not an assigner preset; {ASSIGNER}"),
    (["schedule.assigner_switches=[(0, PAN())]"],
     f"schedule.assigner_switches[0][1]: PAN is not an assigner (it has no assign method); {ASSIGNER}"),
]

# Set by an override, but the error is about an enclosing key: no "(from --cfg-options ...)".
BAD_KEYS = [
    (["data.train.batchsize=8"],
     "data.train: unknown key(s) ['batchsize']; accepted: dataset, batch_size, num_workers"),
    (["data.shuffle=True"],
     "data: unknown key(s) ['shuffle']; accepted: train, val, test, img_size, num_classes, class_names, collate"),
    (["train.epochs=1", "schedule.assigner_switches=[(1, 'atss')]"],
     "schedule.assigner_switches[0][0]: epoch 1 is outside this run's epochs 0..0 (0-based, train.epochs=1)"),
]


@pytest.mark.parametrize("overrides, expected", BAD_OVERRIDES, ids=[o[0] for o, _ in BAD_OVERRIDES])
def test_a_bad_override_is_one_line_naming_the_key_and_the_override(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(CFG, overrides)
    assert cli_message(info.value) == f"{CFG}: {expected} (from --cfg-options {overrides[-1]})"  # as a tool prints it
    assert str(info.value).endswith(f" (from the override {overrides[-1]})")  # load_config's argument


@pytest.mark.parametrize("overrides, expected", BAD_KEYS, ids=[o[-1] for o, _ in BAD_KEYS])
def test_a_bad_key_is_one_line_naming_it(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(CFG, overrides)
    message = str(info.value)
    assert message.startswith(f"{CFG}: {expected}") and "\n" not in message


# (text added to a config file whose base is CFG, the error after "<file>: ")
BAD_FILES = [
    # a plain dict merged into the base's L(torch.optim.SGD)(...)
    ("train = dict(optimizer=dict(lr=float('nan')))", "train.optimizer.lr: must be a finite number > 0, got nan"),
    ("train = dict(optimizer=dict(weight_decay=float('nan')))",
     "train.optimizer.weight_decay: must be a finite number >= 0, got nan"),
    ("train = dict(grad_clip=float('nan'))",
     "train.grad_clip: must be a finite max gradient norm > 0, or 0 / None for no clipping, got nan"),
    ("train = dict(ema=dict(tau=float('nan')))", "train.ema.tau: must be a finite number > 0, got nan"),
    ("schedule = dict(lr=dict(warmup_ratio=float('nan')))", "schedule.lr.warmup_ratio: must be in [0.0, 1.0], got nan"),
    ("train = dict(warmup_ratio=0.1)", "train.warmup_ratio: this key moved to schedule.lr.warmup_ratio "
                                       "(see docs/changelog.md)"),
    ("train = dict(optimizer=dict(type='adamw', lr=1e-3))",
     "train.optimizer: dict(type='adamw', ...) is the old form of an optimizer; name the class with a lazy call: "
     "optimizer=L(torch.optim.AdamW)(lr=0.001, weight_decay=0.05, eps=1e-08, betas=(0.9, 0.999)) "
     "(see docs/changelog.md)"),
    ("model = dict(head=dict(num_classes='five'))", "model.head.num_classes: expected int, got 'five' (str)"),
    ("model = dict(head=dict(loss=dict(assigner='iou-typo')))",
     f"model.head.loss.assigner: 'iou-typo' is not an assigner preset; {ASSIGNER}"),
    ("data = dict(val=dict(batchsize=8))",
     "data.val: unknown key(s) ['batchsize']; accepted: dataset, batch_size, num_workers"),
    ("data = dict(class_names='abc')", "data.class_names: expected a list of str or None, got 'abc' (str)"),
]


@pytest.mark.parametrize("name", ["data.yaml", "instances_train.json"])
def test_a_dataset_file_given_as_the_config_says_so_and_names_data(tmp_path, name):
    """``detkit train data.yaml`` was ``failed to execute config: SyntaxError``."""
    path = tmp_path / name
    path.write_text("train: ../train/images\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    said = f"{path}: not a config (configs are Python files); to train or evaluate on this dataset give a config and "
    assert str(info.value) == said + f"adopt_dataset(cfg, {str(path)!r})"
    assert cli_message(info.value) == said + f"--data {path}"


@pytest.mark.parametrize("text, expected", BAD_FILES, ids=[t for t, _ in BAD_FILES])
def test_a_bad_value_in_a_config_file_is_one_line_naming_the_file_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.py"
    path.write_text(f"_base_ = [{CFG!r}]\n{text}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {expected}"


def test_a_preset_name_is_expanded_to_its_lazy_call_and_dumps_to_a_config_that_loads_back(tmp_path):
    cfg = load_config(CFG, ["model.head.loss.assigner=atss+minpos"])
    node = cfg.model.head.loss.assigner
    assert node == L(MinPositives)(assigner=L(ATSSAssigner)(topk=9), min_pos_per_gt=1)
    assert node == parse_value("MinPositives(assigner=ATSSAssigner(topk=9), min_pos_per_gt=1)")
    path = tmp_path / "dump.py"
    path.write_text(format_config(cfg))
    assert load_config(path).model.head.loss.assigner == node
    tal = load_config(CFG, ["model.head.loss.assigner=tal"]).model.head.loss.assigner
    assert tal[TARGET_KEY] is TaskAlignedAssigner


def test_the_schedule_expands_presets_and_keeps_lazy_calls():
    cfg = load_config(CFG, ["schedule.assigner_switches=[(0, 'atss'), (1, TaskAlignedAssigner(topk=5))]"])
    schedule = ScheduleSettings.from_config(cfg.schedule, epochs=cfg.train.epochs).assigner_switches
    assert schedule == [(0, L(ATSSAssigner)(topk=9)), (1, L(TaskAlignedAssigner)(topk=5))]


EDGES = [  # (overrides, the key, the value it loads as)
    (["train.grad_clip=0"], "train.grad_clip", 0),  # 0 and None: no clipping
    (["train.grad_clip=None"], "train.grad_clip", None),
    (["schedule.lr.warmup_iters=0"], "schedule.lr.warmup_iters", 0),
    (["model.backbone.widen_factor=1"], "model.backbone.widen_factor", 1),  # an int where a float is annotated
    (["data.train.batch_size=None"], "data.train.batch_size", None),
    (["train.epochs=1", "schedule.assigner_switches=[(0, 'fcos')]"], "train.epochs", 1),
]


@pytest.mark.parametrize("overrides, key, value", EDGES, ids=[o[-1] for o, _, _ in EDGES])
def test_values_at_the_edge_of_their_domain_load(overrides, key, value):
    node = load_config(CFG, overrides)
    for part in key.split("."):
        node = node[part]
    assert node == value and type(node) is type(value)


def _module_factory() -> nn.Linear:
    return nn.Linear(1, 1)


def _unannotated_factory():
    return nn.Linear(1, 1)


def test_a_lazy_call_is_checked_by_the_class_it_builds():
    assert check_value(L(_module_factory)(), nn.Module, "k") == L(_module_factory)()  # a function's return class
    check_value(L(_unannotated_factory)(), nn.Module, "k")  # nothing to tell: accepted
    check_value(L(nn.Linear)(in_features=1, out_features=1), nn.Module | None, "k")
    with pytest.raises(SettingError, match=r"^k: expected int, got a lazy call of Linear$"):
        check_value(L(nn.Linear)(in_features=1, out_features=1), int, "k")
    with pytest.raises(SettingError, match=r"^k: expected one of 'a', got a lazy call of _module_factory$"):
        check_value(L(_module_factory)(), Literal["a"], "k")


# Through the tools: exit status 2, one "error:" line, nothing written.
TOOL_CASES = [
    ("model_info", [CFG, "--cfg-options", "model.backbone.widen_factor=abc"],
     "model.backbone.widen_factor: expected float, got 'abc' (str) "
     "(from --cfg-options model.backbone.widen_factor=abc)"),
    ("print_config", [CFG, "--cfg-options", "model.head.num_classes=five"],
     "model.head.num_classes: expected int, got 'five' (str) (from --cfg-options model.head.num_classes=five)"),
    ("train", [CFG, "--work-dir", "{tmp}/work", "--cfg-options", "data.train.batchsize=8"],
     "data.train: unknown key(s) ['batchsize']; accepted: dataset, batch_size, num_workers"),
    ("train", [CFG, "--work-dir", "{tmp}/work", "--cfg-options", "train.optimizer.lr=1e400"],
     "train.optimizer.lr: must be a finite number > 0, got inf"),
    ("train", [CFG, "--work-dir", "{tmp}/work", "--cfg-options", "schedule.assigner_switches=[(0, 'atss'), (1, 3)]"],
     f"schedule.assigner_switches[1][1]: {ASSIGNER}, got 3 (int)"),
]


@pytest.mark.parametrize("tool, argv, expected", TOOL_CASES, ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(TOOL_CASES)])
def test_through_a_tool_a_bad_value_is_one_error_line_and_status_2(tmp_path, capsys, tool, argv, expected):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert load_tool(tool).main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {CFG}: {expected}"), err
    assert not (tmp_path / "work").exists()


def test_build_preset_refuses_what_the_config_refuses():
    assert isinstance(build_preset("atss+minpos2"), MinPositives) and build_preset("atss+minpos2").min_pos_per_gt == 2
    with pytest.raises(ValueError, match=r"^assigner: 'nope' is not an assigner preset; expected a lazy call"):
        build_preset("nope")
    with pytest.raises(ValueError, match=r"^assigner: PAN is not an assigner \(it has no assign method\)"):
        build_preset("PAN()")
