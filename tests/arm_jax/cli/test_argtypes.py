"""The argparse types refuse what the commands cannot use, naming the value."""

import argparse

import pytest

from arm_jax.cli.argtypes import (fractions, non_negative_float, non_negative_int,
                                  positive_float, positive_int, positive_ints)


@pytest.mark.parametrize("fn, good, want", [
    (positive_int, "3", 3), (positive_int, "1e3", 1000), (non_negative_int, "0", 0),
    (positive_float, "0.5", 0.5), (non_negative_float, "0", 0.0),
    (positive_ints, "16,64", (16, 64)), (fractions, "0.2,1", (0.2, 1.0)),
])
def test_good_values_parse(fn, good, want):
    assert fn(good) == want


@pytest.mark.parametrize("fn, bad", [
    (positive_int, "0"), (positive_int, "-1"), (positive_int, "1.5"), (positive_int, "nan"),
    (positive_int, "abc"), (non_negative_int, "-1"), (positive_float, "0"),
    (positive_float, "inf"), (non_negative_float, "-0.1"), (positive_ints, "16,0"),
    (positive_ints, ""), (fractions, "0"), (fractions, "0.5,1.5"), (fractions, "abc"),
])
def test_bad_values_are_argument_errors_quoting_the_text(fn, bad):
    with pytest.raises(argparse.ArgumentTypeError, match=f"got '{bad}'"):
        fn(bad)


def test_the_cli_stops_in_argparse_naming_the_option(capsys):
    from arm_jax.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["bench", "sharing", "--pair-chunk", "0"])
    assert e.value.code == 2
    assert "argument --pair-chunk: expected a positive integer, got '0'" in capsys.readouterr().err
