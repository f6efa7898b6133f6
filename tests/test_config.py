import re
from pathlib import Path

import pytest
import torch

from detkit.config import (
    TARGET_KEY,
    ConfigError,
    L,
    format_config,
    instantiate,
    load_config,
    parse_value,
)
from tests.fixtures.configs.components import Inner, Other, Outer

CFG = Path(__file__).parent / "fixtures" / "configs"


def test_lazy_call_records_target_and_builds_nothing():
    node = L(Inner)(a=3)
    assert node._target_ is Inner and node.a == 3
    built = instantiate(node)
    assert isinstance(built, Inner) and (built.a, built.b) == (3, 1.0)


def test_instantiate_is_recursive_and_takes_runtime_arguments():
    cfg = load_config(CFG / "base.py")
    model = instantiate(cfg.model, size=7)
    assert isinstance(model, Outer) and isinstance(model.inner, Inner)
    assert (model.inner.a, model.inner.b, model.size, model.names) == (1, 2.0, 7, ["cat", "dog"])


def test_base_merges_key_by_key():
    cfg = load_config(CFG / "child.py")
    assert cfg.model.size == 64  # child
    assert cfg.model.inner.b == 2.0  # inherited from base
    assert cfg.train == {"epochs": 3, "lr": 0.01}


def test_a_different_class_replaces_the_component_whole():
    cfg = load_config(CFG / "swap.py")
    assert cfg.model.inner._target_ is Other
    assert dict(cfg.model.inner) == {"_target_": Other, "c": "y"}  # no a/b leaked from Inner
    assert cfg.model.size == 64  # the chain base -> child -> swap


def test_literal_overrides():
    cfg = load_config(CFG / "base.py", ["model.size=128", "train.lr=1e-3", "model.names=['a']", "model.names.0='b'"])
    assert cfg.model.size == 128 and cfg.train.lr == 1e-3 and cfg.model.names == ["b"]


def test_override_replaces_a_component_with_a_call():
    cfg = load_config(CFG / "swap.py", ["model.inner=Inner(a=4)"])  # Inner: imported by a base
    assert dict(cfg.model.inner) == {"_target_": Inner, "a": 4}
    # a dotted path works for any importable class
    cfg = load_config(CFG / "base.py", ["model.inner=tests.fixtures.configs.components.Other(c='q')"])
    assert dict(cfg.model.inner) == {"_target_": Other, "c": "q"}


def test_override_of_same_class_merges_arguments():
    cfg = load_config(CFG / "base.py", ["model.inner=Inner(a=9)"])
    assert (cfg.model.inner.a, cfg.model.inner.b) == (9, 2.0)


def test_unknown_argument_fails_at_load_with_file_key_and_accepted():
    with pytest.raises(ConfigError) as e:
        load_config(CFG / "typo.py")
    msg = str(e.value)
    assert "typo.py" in msg and "'model.inner'" in msg and "'bb'" in msg and "accepted: a, b" in msg


def test_unknown_argument_in_override_fails():
    with pytest.raises(ConfigError, match="'model.inner'.*'q'"):
        load_config(CFG / "base.py", ["model.inner.q=1"])


def test_bad_override_key_names_the_key():
    with pytest.raises(ConfigError, match="no key 'nope'"):
        load_config(CFG / "base.py", ["nope.x=1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(CFG / "base.py", ["model.size"])


def test_unknown_class_name_in_override():
    with pytest.raises(ConfigError, match="unknown name 'NoSuchThing'"):
        load_config(CFG / "base.py", ["model.inner=NoSuchThing(a=1)"])


def test_missing_file_and_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.py")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1 / 0\n")
    with pytest.raises(ConfigError, match="bad.py.*ZeroDivisionError"):
        load_config(bad)


def test_circular_base(tmp_path):
    (tmp_path / "a.py").write_text("_base_ = 'b.py'\n")
    (tmp_path / "b.py").write_text("_base_ = 'a.py'\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.py")


def test_parse_value_literals_and_strings():
    assert parse_value("0.5") == 0.5
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("(320, 640)") == (320, 640)
    assert parse_value("None") is None and parse_value("true") is True
    assert parse_value("data/coco/train2017") == "data/coco/train2017"


def test_format_config_round_trip(tmp_path):
    cfg = load_config(CFG / "swap.py", ["train.lr=0.5"])
    text = format_config(cfg)
    assert "L(Outer)(" in text and "from tests.fixtures.configs.components import Other" in text
    dumped = tmp_path / "dumped.py"
    dumped.write_text(text)
    again = load_config(dumped)
    assert again == cfg


def test_attribute_errors_list_keys():
    cfg = load_config(CFG / "base.py")
    with pytest.raises(AttributeError, match="'nope'.*keys"):
        _ = cfg.nope


# ------------------------------------------------------------------------------------------------
# typed sections (train / runtime) checked at load; instantiate binds before calling
# ------------------------------------------------------------------------------------------------


ENGINE = ("import torch\nfrom detkit.config import L\n"
          "train = dict(epochs=3, optimizer=L(torch.optim.SGD)(lr=0.01))\nruntime = dict()\n")


def _engine_config(tmp_path, body: str = ENGINE) -> Path:
    path = tmp_path / "run.py"
    path.write_text(body)
    return path


def test_a_command_line_value_of_the_wrong_type_is_one_config_error_line(tmp_path):
    path = _engine_config(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(path, ["train.epochs=1O0"])
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == (f"{path}: train.epochs: expected int, got '1O0' (str) "
                   "(from the override train.epochs=1O0)")  # a tool prints --cfg-options


@pytest.mark.parametrize("override, expected", [
    ("train.amp=1", "train.amp: expected bool, got 1 (int)"),
    ("train.grad_clip='high'", "train.grad_clip: expected float or None, got 'high' (str)"),
    ("train.multi_scale=(320, 'x')", "train.multi_scale[1]: expected int, got 'x' (str)"),
    ("train.loss_scale='sum'", "train.loss_scale: expected one of 'mean', 'batch', got 'sum' (str)"),
    ("train.optimizer.lr=[0.1]", "train.optimizer.lr: expected float or Tensor, got [0.1] (list)"),
    ("train.ema=dict(decay='x')", "train.ema.decay: expected float, got 'x' (str)"),
    ("train.optimizer.type='adam'", "train.optimizer: dict(type='adam', ...) is the old form of an optimizer"),
    ("schedule=dict(lr=LRSchedule(policy='poly'))",
     "schedule.lr.policy: expected one of 'cosine', 'step', 'linear', got 'poly' (str)"),
    ("train.epochs=0", "train.epochs: must be >= 1, got 0"),
    ("runtime.loggers=['mlfow']", "runtime.loggers[0]: unknown logger 'mlfow'"),
])
def test_typed_values_name_key_value_and_expected_type(tmp_path, override, expected):
    with pytest.raises(ConfigError, match="^" + re.escape(f"{_engine_config(tmp_path)}: {expected}")):
        load_config(tmp_path / "run.py", [override])


def test_a_file_value_of_the_wrong_type_fails_at_load_too(tmp_path):
    path = _engine_config(tmp_path, "train = dict(epochs='ten')\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: train.epochs: expected int, got 'ten' (str)") + "$"):
        load_config(path)


def test_typed_values_are_converted_and_unknown_keys_left_to_the_trainer(tmp_path):
    from detkit.engine.settings import TrainSettings

    cfg = load_config(_engine_config(tmp_path), ["train.multi_scale=[320, 640]", "train.grad_clip=5", "train.lr=0.1"])
    s = TrainSettings.from_config(cfg.train, strict=False)
    assert s.multi_scale == (320, 640) and s.grad_clip == 5.0 and isinstance(s.grad_clip, float)
    with pytest.raises(ConfigError, match=r"train: unknown key\(s\) \['lr'\]; accepted: epochs, "):
        TrainSettings.from_config(cfg.train)


def test_dict_call_in_an_override_merges_into_a_lazy_call_and_a_new_class_replaces_it(tmp_path):
    path = _engine_config(tmp_path, "import torch\nfrom detkit.config import L\n"
                                    "train = dict(optimizer=L(torch.optim.SGD)(lr=0.01, momentum=0.937, "
                                    "nesterov=True))\n")
    cfg = load_config(path, ["train.optimizer=dict(lr=0.02)"])  # a plain dict over a lazy call: merged key by key
    assert cfg.train.optimizer == {"_target_": torch.optim.SGD, "lr": 0.02, "momentum": 0.937, "nesterov": True}
    cfg = load_config(path, ["train.optimizer=torch.optim.AdamW(lr=1e-3)"])  # another class: the whole call replaced
    assert cfg.train.optimizer == {"_target_": torch.optim.AdamW, "lr": 1e-3}  # SGD's momentum / nesterov gone
    cfg = load_config(path, ["train.optimizer=AdamW(lr=1e-3)"])  # a bare name: torch.optim is searched
    assert cfg.train.optimizer == {"_target_": torch.optim.AdamW, "lr": 1e-3}


def test_dicts_with_a_type_key_merge_as_plain_dicts_now():
    from detkit.config import merge

    assert merge({"type": "sgd", "lr": 0.01, "nesterov": True}, {"type": "adamw"}) == {
        "type": "adamw", "lr": 0.01, "nesterov": True}


class Buggy:
    """A constructor with a bug of its own (a TypeError inside), not a config mistake."""

    def __init__(self, a: int) -> None:
        self.a = a + None


def test_instantiate_reports_binding_errors_as_config_errors():
    with pytest.raises(ConfigError, match=r"cannot build Inner\(a, bb\): .*'bb'.*; accepted: a, b"):
        instantiate({"_target_": Inner, "a": 1, "bb": 2})
    with pytest.raises(ConfigError, match=r"cannot build Inner\(b\): .*missing.*'a'"):
        instantiate({"_target_": Inner, "b": 2.0})


def test_instantiate_lets_a_constructor_bug_stay_a_bug():
    with pytest.raises(TypeError, match="unsupported operand") as e:
        instantiate(L(Buggy)(a=1))
    assert not isinstance(e.value, ConfigError)


def test_a_missing_key_is_a_config_error_naming_the_file():
    cfg = load_config(CFG / "base.py")
    with pytest.raises(ConfigError, match=r"base\.py: config has no key 'nope'; keys: \['model', 'train'\]"):
        _ = cfg.nope
    assert getattr(cfg, "nope", 7) == 7 and not hasattr(cfg.model, "nope")


def test_call_text_writes_a_lazy_call_as_python():
    from detkit.assigners import ATSSAssigner, MinPositives
    from detkit.lazy import call_text

    node = L(MinPositives)(assigner=L(ATSSAssigner)(topk=9), min_pos_per_gt=1)
    assert call_text(node) == "MinPositives(assigner=ATSSAssigner(topk=9), min_pos_per_gt=1)"
    assert call_text(node, lazy=True) == "L(MinPositives)(assigner=L(ATSSAssigner)(topk=9), min_pos_per_gt=1)"
    assert call_text(L(torch.optim.AdamW)(betas=(0.9, 0.99), x=[(1,)]), lazy=True, qualified=True) == (
        "L(torch.optim.AdamW)(betas=(0.9, 0.99), x=[(1,)])")
    assert parse_value(call_text(node)) == node  # the text parses back to the same call
    with pytest.raises(ValueError, match="not a lazy call"):
        call_text({"a": 1})


def test_assigner_presets_are_lazy_calls_and_their_text_parses_back():
    from detkit.assigners.presets import ASSIGNER_PRESETS, assigner_call, expand_preset

    for name, node in ASSIGNER_PRESETS.items():
        assert node[TARGET_KEY] is not None and expand_preset(name) == node and expand_preset(name) is not node
        assert parse_value(assigner_call(name)) == node
    assert assigner_call("ATSSAssigner(topk=13)") == "ATSSAssigner(topk=13)"  # a call: as written
