"""Tests for mtbench.core.registry: decorator registration, name clashes, lookups and outside components."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from mtbench.core.errors import UserError
from mtbench.core.registry import Registry, component_name, load_object


# -- registration -------------------------------------------------------------------------------
def test_register_class_by_its_name_attribute():
    reg = Registry("things")

    @reg.register
    class Alpha:
        name = "alpha"

    assert reg.get("alpha") is Alpha
    assert reg.names() == ["alpha"]
    assert "alpha" in reg
    assert "Alpha" not in reg


def test_register_function_by_its_dunder_name():
    reg = Registry("things")

    @reg.register
    def beta() -> int:
        return 7

    assert reg.get("beta") is beta
    assert list(reg.items()) == [("beta", beta)]
    assert reg.get("beta")() == 7


def test_class_without_name_attribute_cannot_be_registered():
    reg = Registry("things")

    class Nameless:
        pass

    with pytest.raises(TypeError, match="name"):
        reg.register(Nameless)
    assert reg.names() == []


def test_component_name_prefers_name_attribute_over_dunder_name():
    class Gamma:
        name = "gamma-component"

    def delta() -> None:
        pass

    assert component_name(Gamma) == "gamma-component"
    assert component_name(delta) == "delta"


def test_registering_the_same_object_twice_is_a_no_op():
    reg = Registry("things")

    class Alpha:
        name = "alpha"

    assert reg.register(Alpha) is Alpha
    assert reg.register(Alpha) is Alpha
    assert reg.names() == ["alpha"]
    assert reg.get("alpha") is Alpha


def test_a_different_object_under_a_taken_name_raises_naming_both():
    reg = Registry("things")

    class FirstThing:
        name = "dup"

    class SecondThing:
        name = "dup"

    reg.register(FirstThing)
    with pytest.raises(UserError) as info:
        reg.register(SecondThing)
    message = str(info.value)
    assert "'dup'" in message
    assert "FirstThing" in message
    assert "SecondThing" in message
    assert reg.get("dup") is FirstThing  # the first one stays


def test_unregister_frees_the_name():
    reg = Registry("things")

    class A:
        name = "same"

    class B:
        name = "same"

    reg.register(A)
    reg.unregister("same")
    assert "same" not in reg
    reg.register(B)
    assert reg.get("same") is B


# -- unknown names ------------------------------------------------------------------------------
def test_unknown_name_suggests_a_near_miss_on_the_real_methods_registry():
    from mtbench.methods import METHODS

    with pytest.raises(UserError) as info:
        METHODS.get("protonte")
    message = str(info.value)
    assert "'protonte'" in message
    assert "did you mean 'protonet'" in message
    assert "maml" in message and "protonet" in message  # the known names are listed


def test_unknown_name_without_near_miss_lists_known_names_but_suggests_nothing():
    reg = Registry("things")

    @reg.register
    def zebra() -> None:
        pass

    @reg.register
    def yak() -> None:
        pass

    with pytest.raises(UserError) as info:
        reg.get("completely-different")
    message = str(info.value)
    assert "did you mean" not in message
    assert "unknown thing 'completely-different'" in message
    assert "known things: yak, zebra" in message


# -- outside components -------------------------------------------------------------------------
def test_get_file_spec_loads_and_registers_a_class(tmp_path):
    plugin = tmp_path / "plugin_file.py"
    plugin.write_text("class Gizmo:\n    name = 'gizmo'\n    answer = 42\n")
    reg = Registry("things")
    cls = reg.get(f"{plugin}:Gizmo")
    assert cls.__name__ == "Gizmo"
    assert cls.answer == 42
    assert reg.names() == ["gizmo"]
    assert reg.get("gizmo") is cls


def test_get_same_file_spec_twice_returns_the_same_object(tmp_path):
    plugin = tmp_path / "plugin_twice.py"
    plugin.write_text("class Gizmo:\n    name = 'gizmo'\n")
    reg = Registry("things")
    first = reg.get(f"{plugin}:Gizmo")
    assert reg.get(f"{plugin}:Gizmo") is first


def test_file_spec_with_postponed_annotations_and_a_dataclass_loads(tmp_path):
    plugin = tmp_path / "plugin_future.py"
    plugin.write_text(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n\n"
        "@dataclass(frozen=True)\n"
        "class Hp:\n"
        "    lr: float = 0.1\n\n"
        "class Gizmo:\n"
        "    name = 'gizmo'\n"
        "    Hparams = Hp\n"
    )
    reg = Registry("things")
    cls = reg.get(f"{plugin}:Gizmo")
    assert cls.Hparams().lr == 0.1


def test_file_spec_for_a_missing_file_or_attribute_is_a_user_error(tmp_path):
    reg = Registry("things")
    with pytest.raises(UserError, match="does not exist"):
        reg.get(f"{tmp_path / 'absent.py'}:Gizmo")
    plugin = tmp_path / "plugin_noattr.py"
    plugin.write_text("x = 1\n")
    with pytest.raises(UserError, match="no attribute 'Gizmo'"):
        reg.get(f"{plugin}:Gizmo")
    assert reg.names() == []


@pytest.fixture
def importable_package(tmp_path, monkeypatch):
    """A package ``mtbench_regtest_pkg`` with a module ``mod`` on sys.path, removed afterwards."""
    pkg = tmp_path / "mtbench_regtest_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(
        "class Widget:\n    name = 'widget'\n\n"
        "def helper_factory():\n    return 'made'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "mtbench_regtest_pkg"
    for name in ("mtbench_regtest_pkg.mod", "mtbench_regtest_pkg"):
        sys.modules.pop(name, None)




def test_get_module_spec_imports_and_registers(importable_package):
    reg = Registry("things")
    cls = reg.get(f"{importable_package}.mod:Widget")
    assert cls.__module__ == f"{importable_package}.mod"
    assert reg.names() == ["widget"]
    assert reg.get("widget") is cls
    # an imported module is cached: the same spec gives the same object again
    assert reg.get(f"{importable_package}.mod:Widget") is cls
    factory = reg.get(f"{importable_package}.mod:helper_factory")
    assert factory() == "made"
    assert reg.names() == ["helper_factory", "widget"]


@pytest.mark.parametrize("spec", ["mtbench_regtest_pkg.mod:", ":Widget"])
def test_spec_with_an_empty_part_is_a_user_error(importable_package, spec):
    reg = Registry("things")
    with pytest.raises(UserError, match="module:attr"):
        reg.get(spec)
    assert reg.names() == []


def test_load_object_without_colon_is_a_user_error():
    with pytest.raises(UserError, match="not a 'module:attr' reference"):
        load_object("mtbench.core.registry")


def test_spec_for_a_missing_module_or_attribute_is_a_user_error(importable_package):
    reg = Registry("things")
    with pytest.raises(UserError, match="cannot import module 'mtbench_no_such_module_xyz'"):
        reg.get("mtbench_no_such_module_xyz:Thing")
    with pytest.raises(UserError, match="has no attribute 'Nope'"):
        reg.get(f"{importable_package}.mod:Nope")


# -- entry points and builtins ------------------------------------------------------------------
class _FakeEntryPoint:
    def __init__(self, name: str, obj: object) -> None:
        self.name = name
        self._obj = obj
        self.loaded = 0

    def load(self) -> object:
        self.loaded += 1
        return self._obj


def test_entry_points_of_the_kind_group_are_registered(monkeypatch):
    class Plugged:
        name = "plugged"

    entry = _FakeEntryPoint("plugged", Plugged)
    groups: list[str | None] = []

    def fake_entry_points(**kwargs):
        groups.append(kwargs.get("group"))
        return [entry] if kwargs.get("group") == "mtbench.methods" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    methods = Registry("methods")
    assert "plugged" in methods.names()
    assert methods.get("plugged") is Plugged
    assert groups == ["mtbench.methods"]  # queried once, with the kind's group
    assert entry.loaded == 1

    others = Registry("datasets")
    assert "plugged" not in others.names()
    assert groups == ["mtbench.methods", "mtbench.datasets"]


def test_builtin_modules_are_imported_on_first_read(importable_package, tmp_path):
    (tmp_path / importable_package / "selfreg.py").write_text(
        "from mtbench_regtest_pkg.holder import REG\n\n"
        "@REG.register\n"
        "class SelfRegistered:\n    name = 'self-registered'\n"
    )
    (tmp_path / importable_package / "holder.py").write_text(
        "from mtbench.core.registry import Registry\n"
        "REG = Registry('things', builtins=('mtbench_regtest_pkg.selfreg',))\n"
    )
    try:
        holder = __import__(f"{importable_package}.holder", fromlist=["REG"])
        assert f"{importable_package}.selfreg" not in sys.modules  # nothing imported before a read
        assert holder.REG.names() == ["self-registered"]
    finally:
        for name in ("holder", "selfreg"):
            sys.modules.pop(f"{importable_package}.{name}", None)


# -- the real registries ------------------------------------------------------------------------
def test_real_registries_hold_the_builtin_components():
    from mtbench.methods.backbones import BACKBONES
    from mtbench.data import DATASETS
    from mtbench.methods import METHODS

    assert {"omniglot", "synthetic"} <= set(DATASETS.names())
    assert {"protonet", "maml"} <= set(METHODS.names())
    assert "conv4" in BACKBONES.names()
    assert METHODS.get("protonet").name == "protonet"
    assert DATASETS.get("synthetic").name == "synthetic"
    assert callable(BACKBONES.get("conv4"))
