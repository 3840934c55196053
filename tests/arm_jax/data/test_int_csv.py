"""Integer CSV tables (`arm_jax.data.int_csv`): what numpy's fast parse and the csv
module's slow one both refuse."""

from __future__ import annotations

import pytest

from arm_jax.data.int_csv import CsvError, read_int_csv

COLUMNS = ["user_id", "item", "action", "ts"]


@pytest.mark.parametrize("row,fields", [
    ("42,18,1,1,700,000,100", 7),       # a ts with thousands separators
    ("42,1,234,0,1700000100", 5),       # one field too many: item 1, action 234, ts 0
    ("42,18,1", 3),                     # one too few
])
@pytest.mark.parametrize("quoted", [False, True], ids=["fast", "slow"])
def test_a_row_whose_width_is_not_the_headers_is_named(tmp_path, row, fields, quoted):
    """Every row has as many fields as the header: numpy's `usecols` dropped extra fields
    and the slow path indexed only the wanted ones, so such a row loaded with its columns
    shifted. A quoted value sends the file down the csv module's path."""
    first = '"42",17,1,1700000000' if quoted else "42,17,1,1700000000"
    path = tmp_path / "ev.csv"
    path.write_text(f"{','.join(COLUMNS)}\n{first}\n\n{row}\n")
    with pytest.raises(CsvError) as e:
        read_int_csv(path, COLUMNS)
    assert str(e.value).startswith(f"line 4: {fields} fields, the header has 4"), e.value
    assert "\n" not in str(e.value)
    path.write_text(f"{','.join(COLUMNS)}\n{first}\n\n")     # without the row: it reads
    assert read_int_csv(path, COLUMNS)["ts"].tolist() == [1700000000]
