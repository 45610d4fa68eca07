"""DS1000's values between the program and the checker: what is carried arrives identical,
what would change (or carries behaviour) stays behind, and malformed data runs no code."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from restrl.sandbox.server import carry, carry_faithfully, pack, same_value, uncarry


def _through_the_pipe(value: object) -> object:
    return uncarry(json.loads(json.dumps(carry_faithfully(value))))


CARRIED = {
    "plain": [1, (2.5, float("nan")), {"k": {1, 2}}, b"\x00", 1j],
    "int array": np.arange(6).reshape(2, 3),
    "float array with nan": np.array([1.5, np.nan]),
    "datetime array": np.array(["2020-01-01", "2021-02-03"], dtype="datetime64[ns]"),
    "object array": np.array([[1, "a"], [None, 2.0]], dtype=object),
    "numpy scalar": np.float32(3.5),
    "frame": pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "c": [1.5, np.nan]}),
    "frame with duplicate columns": pd.DataFrame(np.arange(6).reshape(3, 2), columns=["a", "a"]),
    "multi-indexed frame": pd.DataFrame({"a": [1, 2]}, index=pd.MultiIndex.from_tuples(
        [(1, "a"), (2, "b")], names=["i", "j"])),
    "dated frame with a frequency": pd.DataFrame(
        {"d": pd.date_range("2020", periods=3, freq="D")},
        index=pd.date_range("2020", periods=3, freq="D")),
    "frame of lists": pd.DataFrame({"l": [[1, 2], [3]]}),
    "named series": pd.Series([1, 2, 3], index=list("abc"), name="s"),
    "nullable series": pd.Series([1, None], dtype="Int64"),
    "categorical series": pd.Series(pd.Categorical(["a", "b", "a"])),
    "timestamp with a zone": pd.Timestamp("2020-01-01 10:00", tz="US/Eastern"),
    "timedelta": pd.Timedelta("1D"),
    "range index": pd.RangeIndex(5),
}


@pytest.mark.parametrize("name", sorted(CARRIED))
def test_a_carried_value_arrives_identical(name):
    value = CARRIED[name]
    back = _through_the_pipe(value)
    assert same_value(back, value)
    assert type(back) is type(value)


def test_sparse_matrices_and_tensors_arrive_identical():
    sparse = pytest.importorskip("scipy.sparse")
    for value in (sparse.csr_matrix(np.eye(3)), sparse.lil_matrix(np.eye(2)),
                  sparse.csr_array(np.eye(2))):
        assert same_value(_through_the_pipe(value), value)
    torch = pytest.importorskip("torch")
    for value in (torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.arange(4)):
        back = _through_the_pipe(value)
        assert back.dtype == value.dtype and torch.equal(back, value)


class _AlwaysEqual:
    def __eq__(self, other: object) -> bool:
        return True


@pytest.mark.parametrize("value", [
    _AlwaysEqual(), np.array([1, 2]).view(np.matrix), [1, _AlwaysEqual()],
    pd.Series(pd.Categorical(["a"], categories=["b", "a"])),  # unused categories would vanish
], ids=["forged __eq__", "ndarray subclass", "inside a list", "categories that would change"])
def test_a_value_that_would_not_arrive_identical_stays_behind(value):
    with pytest.raises(TypeError):
        carry_faithfully(value)


@pytest.mark.parametrize("data", [
    {"nd": ["|O8", [1], "AAAAAAAAAAA="]},  # object pointers from bytes
    {"nd": [[["a", "O"]], [1], ""]},  # a record holding objects
    {"sp": ["os_system", [1], 1, 1, 1]},
    {"tt": ["load", False, 1]},
    {"zz": []},
])
def test_malformed_carried_data_is_refused(data):
    with pytest.raises(ValueError):
        uncarry(data)


def test_humaneval_values_still_pack_numpy_scalars_as_python_numbers():
    assert pack(np.int64(3)) == 3 and type(pack(np.int64(3))) is int
    assert carry(np.int64(3)) != 3  # DS1000 keeps the numpy type
