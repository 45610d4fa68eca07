"""DS1000's values between the program and the checker: what is carried arrives identical,
what would change (or carries behaviour) stays behind, and malformed data runs no code."""

from __future__ import annotations

import datetime
import json
import zoneinfo
from decimal import Decimal
from fractions import Fraction

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
    "categories in their order, unused ones too": pd.Series(
        pd.Categorical(["a"], categories=["b", "a", "c"], ordered=True)),
    "intervals of pd.cut": pd.cut(pd.Series([1, 5, 9]), 3),
    "period index": pd.period_range("2020-01", periods=3, freq="M"),
    "matrix": np.array([[1, 2], [3, 4]]).view(np.matrix),  # (np.matrix() warns)
    "masked array": np.ma.masked_array([1, 2, 3], mask=[0, 1, 0], fill_value=7),
    "dates, decimals, fractions, ranges": [datetime.date(2020, 1, 2),
                                           datetime.datetime(2020, 1, 2, 3, 4, 5, 6),
                                           datetime.timedelta(hours=5), Decimal("1.50"),
                                           Fraction(1, 3), range(1, 9, 2)],
}


@pytest.mark.parametrize("name", sorted(CARRIED))
def test_a_carried_value_arrives_identical(name):
    value = CARRIED[name]
    back = _through_the_pipe(value)
    assert same_value(back, value)
    assert type(back) is type(value)


def test_sparse_matrices_arrive_with_their_stored_entries():
    sparse = pytest.importorskip("scipy.sparse")
    duplicates = sparse.csr_matrix(([1.0, 2.0], [0, 0], [0, 2, 2]), shape=(2, 2))
    unsorted = sparse.csr_matrix(([1.0, 2.0], [1, 0], [0, 2, 2]), shape=(2, 2))
    for value in (sparse.csr_matrix(np.eye(3)), sparse.lil_matrix(np.eye(2)),
                  sparse.csr_array(np.eye(2)), duplicates, unsorted,
                  sparse.bsr_matrix(np.arange(16.0).reshape(4, 4), blocksize=(2, 2)),
                  sparse.coo_matrix(([1.0, 2.0], ([0, 0], [0, 0])), shape=(2, 2)),
                  sparse.dia_matrix(np.diag([1.0, 2.0]))):
        back = _through_the_pipe(value)
        assert type(back) is type(value) and same_value(back, value)
        assert back.nnz == value.nnz
    assert _through_the_pipe(unsorted).indices.tolist() == [1, 0]
    assert not same_value(duplicates, sparse.csr_matrix(duplicates.toarray()))  # merged


def test_tensors_arrive_with_dtype_grad_and_parameter_type():
    torch = pytest.importorskip("torch")
    for value in (torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.arange(4),
                  torch.ones(2, dtype=torch.bfloat16), torch.ones(2, requires_grad=True),
                  torch.nn.Parameter(torch.ones(3)), torch.ones(2, 3).shape):
        back = _through_the_pipe(value)
        assert type(back) is type(value) and same_value(back, value)
    assert _through_the_pipe(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.bfloat16


class _Array(np.ndarray):
    pass


class _AlwaysEqual:
    def __eq__(self, other: object) -> bool:
        return True


@pytest.mark.parametrize("value", [
    _AlwaysEqual(), np.array([1, 2]).view(_Array), [1, _AlwaysEqual()],
    np.rec.fromarrays([np.array([1]), np.array([2.0])]),
    datetime.datetime(2020, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
], ids=["forged __eq__", "ndarray subclass of the program", "inside a list", "record array",
        "a zone that would arrive as a fixed offset"])
def test_a_value_that_would_not_arrive_identical_stays_behind(value):
    with pytest.raises(TypeError):
        carry_faithfully(value)


@pytest.mark.parametrize("data", [
    {"nd": ["|O8", [1], "AAAAAAAAAAA="]},  # object pointers from bytes
    {"nd": [[["a", "O"]], [1], ""]},  # a record holding objects
    {"sp": ["os_system", [1], [1, 1, 1]]},
    {"tt": ["load", False, False, 1]},
    {"tt": ["bool", False, False, carry(np.array([2], dtype=np.uint8))]},  # not bool bits
    {"sd": ["fraction", [1, 0]]},
    {"zz": []},
])
def test_malformed_carried_data_is_refused(data):
    with pytest.raises(ValueError):
        uncarry(data)


def test_humaneval_values_still_pack_numpy_scalars_as_python_numbers():
    assert pack(np.int64(3)) == 3 and type(pack(np.int64(3))) is int
    assert carry(np.int64(3)) != 3  # DS1000 keeps the numpy type
