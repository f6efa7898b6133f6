from pathlib import Path

import pytest

from detkit.config import (
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
        cfg.nope
