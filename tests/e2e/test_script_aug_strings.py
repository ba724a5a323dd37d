"""Golden parses of every augmentation string used in scripts/ and in the method defaults."""

from __future__ import annotations

import pathlib
import re

import pytest

from deep_representation_one_class.augment import grammar
from deep_representation_one_class.methods import METHODS

SCRIPTS = pathlib.Path(__file__).resolve().parents[2] / "scripts"
_FLAG = re.compile(r"--aug_list(?:_for_test)?[= ]([\"']?)([^\"'\s);]+)\1")


def _script_strings() -> list[tuple[str, str]]:
    found = []
    for path in sorted(SCRIPTS.glob("*.sh")):
        for m in _FLAG.finditer(path.read_text()):
            if "$" not in m.group(2):  # skip strings built from shell variables
                found.append((path.name, m.group(2)))
    return found


def test_scripts_use_augmentation_strings():
    names = {name for name, _ in _script_strings()}
    assert names, "expected scripts/*.sh to pass --aug_list"


@pytest.mark.parametrize("source,text", _script_strings())
def test_script_string_parses(source, text):
    views = grammar.parse(text)
    assert views and all(v.ops for v in views)
    # Round trip: formatting and re-parsing gives the same specs.
    assert grammar.parse(grammar.format_views(views)) == views


@pytest.mark.parametrize("method", METHODS.names())
def test_method_default_strings(method):
    d = METHODS.get(method).defaults
    views = grammar.parse(d["aug_list"])
    if d["latent_dim"]:
        assert len(views) == d["latent_dim"]
    if d["aug_list_for_test"]:
        assert len(grammar.parse(d["aug_list_for_test"])) == len(views)


def test_paper_rotation_string_golden():
    views = grammar.parse(grammar.PAPER_AUG + grammar.ROTATIONS)
    assert [op.name for op in views[0].ops] == ["cnr", "hflip", "jitter", "gray", "blur"]
    assert [op.name for op in views[3].ops][-1] == "rotate270"
    assert dict(views[0].ops[2].params) == {
        "brightness": 0.4,
        "contrast": 0.4,
        "saturation": 0.4,
        "hue": 0.4,
    }
