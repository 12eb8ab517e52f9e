import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from embedrec.embedders.two_tower.features import (
    Feature,
    FeatureError,
    TowerSpec,
    encode_feature,
    fit_feature,
)


def encoded(feature: Feature, train: list, new: list) -> np.ndarray:
    column = feature.column or "x"
    fitted = fit_feature(feature, pd.DataFrame({column: train}), None)
    return encode_feature(feature, fitted, pd.DataFrame({column: new}), None)


def test_categorical_one_hot_with_an_out_of_vocabulary_bucket() -> None:
    f = Feature(kind="categorical", column="c")
    out = encoded(f, ["b", "a", "b", None], ["a", "b", "zzz", None, 3.0])
    assert out.shape == (5, 3)  # OOV + a + b
    assert out.argmax(axis=1).tolist() == [1, 2, 0, 0, 0]


def test_numeric_quantiles_edges_widths_and_standardising() -> None:
    x = [1, 2, 3, 4, 5, 6, 7, 8]
    q = encoded(Feature(kind="numeric", column="n", buckets=2), x, [1, 8, None])
    assert q.argmax(axis=1).tolist() == [1, 2, 0]  # below/above the median; 0 is missing
    e = encoded(Feature(kind="numeric", column="n", edges=[18, 25]), x, [17, 18, 30, "40"])
    assert e.argmax(axis=1).tolist() == [1, 2, 3, 3]
    w = encoded(Feature(kind="numeric", column="n", width=10), [1991, 1985], [1999, 1987, 2005])
    assert w.argmax(axis=1).tolist() == [2, 1, 0]  # 1980s, 1990s; 2000s unseen
    s = encoded(Feature(kind="numeric", column="n", standardize=True), [0, 2], [1, 3, None])
    np.testing.assert_allclose(s, [[0, 0], [2, 0], [0, 1]])


def test_multi_from_lists_and_separated_strings() -> None:
    f = Feature(kind="multi", column="g", separator=";")
    out = encoded(f, ["a;b", ["c"]], [["a", "c"], "b;new", None])
    assert out.tolist() == [[0, 1, 0, 1], [1, 0, 1, 0], [0, 0, 0, 0]]
    with pytest.raises(FeatureError, match=r"row 0, column 'g': a list, got 'a;b'"):
        encoded(Feature(kind="multi", column="g"), ["a;b"], [])


def test_bad_values_and_declarations_are_named() -> None:
    with pytest.raises(FeatureError, match=r"row 1, column 'n': a number, got 'x'"):
        encoded(Feature(kind="numeric", column="n"), [1, "x"], [])
    with pytest.raises(ValidationError, match="give one of buckets, edges, width"):
        Feature(kind="numeric", column="n", buckets=4, standardize=True)
    with pytest.raises(ValidationError, match="takes a template, not a column"):
        Feature(kind="text", column="title")
    with pytest.raises(ValidationError, match="separator applies to multi"):
        Feature(kind="categorical", column="c", separator="|")
    with pytest.raises(ValidationError, match="declared twice"):
        TowerSpec(id="u", features=[Feature(kind="categorical", column="c")] * 2)


def test_tower_texts_groups_and_row_validation() -> None:
    spec = TowerSpec(
        id="sku",
        features=[
            Feature(kind="text", template="{name} ({tags})"),
            Feature(kind="multi", column="tags", separator="|"),
        ],
    )
    frame = pd.DataFrame({"name": ["Tea", "Cup"], "tags": ["hot|drink", None]})
    assert spec.texts(frame) == ["Tea (hot|drink)", "Cup ()"]
    assert spec.groups(frame) == [["hot", "drink"], []]
    assert spec.columns() == ["name", "tags"]
    assert spec.validate_row({"sku": "1", "name": "Pot", "tags": ["x"]})["name"] == "Pot"
    with pytest.raises(FeatureError, match="column 'colour': not a feature"):
        spec.validate_row({"name": "Pot", "tags": "x", "colour": "red"})
