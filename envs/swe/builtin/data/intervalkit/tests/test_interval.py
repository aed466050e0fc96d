import pytest
from intervalkit import Interval, parse_interval


def test_contains_closed():
    i = Interval(1, 5)
    assert 1 in i and 5 in i and 3 in i
    assert 0 not in i and 6 not in i


def test_contains_open():
    i = Interval(1, 5, False, False)
    assert 1 not in i and 5 not in i
    assert 4.999 in i


def test_empty():
    assert Interval(3, 1).empty
    assert Interval(2, 2, True, False).empty
    assert not Interval(2, 2).empty
    assert 2 not in Interval(2, 2, False, True)


def test_length():
    assert Interval(1, 4).length == 3
    assert Interval(4, 1).length == 0


def test_intersection():
    assert Interval(0, 5) & Interval(3, 8) == Interval(3, 5)
    assert (Interval(0, 2) & Interval(3, 4)).empty


def test_intersection_same_bound_open_wins():
    assert Interval(0, 5, True, False) & Interval(0, 5) == Interval(0, 5, True, False)


def test_overlaps():
    assert Interval(0, 5).overlaps(Interval(5, 9))
    assert not Interval(0, 5, True, False).overlaps(Interval(5, 9))


def test_touches_adjacent_half_open():
    assert Interval(0, 5, True, False).touches(Interval(5, 9))


def test_hull():
    assert Interval(0, 2).hull(Interval(5, 9, False, False)) == Interval(0, 9, True, False)
    assert Interval(3, 1).hull(Interval(0, 1)) == Interval(0, 1)


def test_str():
    assert str(Interval(1, 5, True, False)) == "[1, 5)"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("[1, 5)", Interval(1, 5, True, False)),
        ("(0,1]", Interval(0, 1, False, True)),
        ("[2.5, 3]", Interval(2.5, 3)),
        ("(-inf, 0]", Interval(float("-inf"), 0, False, True)),
    ],
)
def test_parse(text, expected):
    assert parse_interval(text) == expected


@pytest.mark.parametrize("text", ["1, 5", "[1 5]", "[a, b]", "[1, 2, 3]"])
def test_parse_rejects(text):
    with pytest.raises(ValueError):
        parse_interval(text)
