import copy
import json
import pickle

import pytest

from embedrec.stores.base import FrozenMetadata, Hit


def test_frozen_metadata_refuses_every_change():
    meta = FrozenMetadata({"genre": "Drama", "tags": ["a"]})
    for change in (
        lambda m: m.__setitem__("genre", "x"),
        lambda m: m.__delitem__("genre"),
        lambda m: m.update(genre="x"),
        lambda m: m.setdefault("new", 1),
        lambda m: m.pop("genre"),
        lambda m: m.popitem(),
        lambda m: m.clear(),
        lambda m: m.__ior__({"genre": "x"}),
    ):
        with pytest.raises(TypeError, match="read-only"):
            change(meta)
    assert meta == {"genre": "Drama", "tags": ["a"]}


def test_frozen_metadata_copies_are_plain_dicts():
    meta = FrozenMetadata({"genre": "Drama", "year": 1999})
    for twin in (dict(meta), meta.copy(), copy.copy(meta), pickle.loads(pickle.dumps(meta))):
        assert type(twin) is dict and twin == meta
        twin["genre"] = "x"
    assert copy.deepcopy(meta) == meta and meta["genre"] == "Drama"
    assert json.loads(json.dumps(meta)) == {"genre": "Drama", "year": 1999}
    assert isinstance(meta, dict) and meta | {"a": 1} == {"genre": "Drama", "year": 1999, "a": 1}


def test_hit_fields_and_unpacking():
    hit = Hit("a", 0.5, {"x": 1})
    assert (hit.id, hit.score, hit.metadata) == ("a", 0.5, {"x": 1})
    rid, score, meta = hit
    assert (rid, score, meta) == ("a", 0.5, {"x": 1}) and Hit("b", 1.0).metadata is None
