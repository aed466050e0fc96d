from intervalkit import Interval, IntervalSet


def test_normalize_merges_overlapping():
    s = IntervalSet([Interval(5, 8), Interval(0, 3), Interval(2, 6)])
    assert list(s) == [Interval(0, 8)]


def test_normalize_keeps_disjoint_sorted():
    s = IntervalSet([Interval(5, 8), Interval(0, 3)])
    assert list(s) == [Interval(0, 3), Interval(5, 8)]


def test_normalize_drops_empty():
    assert not IntervalSet([Interval(3, 1)])


def test_contains():
    s = IntervalSet([Interval(0, 1), Interval(5, 6)])
    assert 0.5 in s and 5 in s
    assert 3 not in s


def test_measure():
    assert IntervalSet([Interval(0, 1), Interval(5, 7)]).measure == 3


def test_union():
    a = IntervalSet([Interval(0, 2)])
    b = IntervalSet([Interval(1, 3), Interval(10, 11)])
    assert list(a | b) == [Interval(0, 3), Interval(10, 11)]


def test_intersection():
    a = IntervalSet([Interval(0, 5), Interval(10, 15)])
    b = IntervalSet([Interval(3, 12)])
    assert list(a & b) == [Interval(3, 5), Interval(10, 12)]


def test_difference_middle():
    s = IntervalSet([Interval(0, 10)]) - IntervalSet([Interval(2, 3)])
    assert list(s) == [Interval(0, 2, True, False), Interval(3, 10, False, True)]


def test_interval_minus_interval():
    assert list(Interval(0, 10) - Interval(5, 20)) == [Interval(0, 5, True, False)]


def test_complement():
    s = IntervalSet([Interval(2, 3)])
    assert list(s.complement(Interval(0, 10))) == [
        Interval(0, 2, True, False),
        Interval(3, 10, False, True),
    ]


def test_gaps():
    s = IntervalSet([Interval(0, 1), Interval(4, 5)])
    assert s.gaps() == [Interval(1, 4, False, False)]


def test_repr():
    assert repr(IntervalSet([Interval(0, 1, True, False)])) == "IntervalSet([[0, 1)])"


def test_equality():
    assert IntervalSet([Interval(0, 1), Interval(1, 2)]) == IntervalSet([Interval(0, 2)])
