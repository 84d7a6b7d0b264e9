import pytest

from synth.dataset.splits import assign_split, parse_split
from synth.errors import ConfigError


def test_parse_split():
    assert parse_split("train=0.8,val=0.1,test=0.1") == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert parse_split(None) is None
    for bad, needle in [("train=0.8", "sum to 0.8"), ("train", "NAME=FRACTION"), ("1a=1", "start with a letter"),
                        ("a=x,b=1", "not a number"), ("a=0.5,a=0.5", "twice")]:
        with pytest.raises(ConfigError, match=needle):
            parse_split(bad)


def test_assignment_is_stable_and_proportional():
    fr = {"train": 0.8, "val": 0.1, "test": 0.1}
    keys = [f"pt-{i:04x}" for i in range(4000)]
    a = [assign_split(k, fr, seed=1) for k in keys]
    assert a == [assign_split(k, fr, seed=1) for k in keys]
    for name, f in fr.items():
        assert abs(a.count(name) / len(keys) - f) < 0.03
    # a patient's split does not depend on which other patients exist
    assert assign_split(keys[7], fr, seed=1) == a[7]
    assert [assign_split(k, fr, seed=2) for k in keys] != a  # the seed reshuffles
