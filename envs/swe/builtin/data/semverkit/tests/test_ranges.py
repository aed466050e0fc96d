import pytest
from semverkit import Range, Version


@pytest.mark.parametrize(
    "rng,version,expected",
    [
        ("^1.2.3", "1.2.3", True),
        ("^1.2.3", "1.9.0", True),
        ("^1.2.3", "2.0.0", False),
        ("^1.2.3", "1.2.2", False),
        ("~1.2.3", "1.2.9", True),
        ("~1.2.3", "1.3.0", False),
        ("~1", "1.9.9", True),
        ("1.x", "1.4.0", True),
        ("1.x", "2.0.0", False),
        ("*", "3.0.0", True),
        (">=1.0.0 <2.0.0", "1.5.0", True),
        (">=1.0.0 <2.0.0", "2.0.0", False),
        (">1.2", "1.2.9", False),
        (">1.2", "1.3.0", True),
        ("<=1.2", "1.2.9", True),
        ("<1.2", "1.1.9", True),
        ("1.2.3", "1.2.3", True),
        ("=1.2.3", "1.2.4", False),
    ],
)
def test_contains(rng, version, expected):
    assert Range(rng).contains(version) is expected


def test_or_ranges():
    r = Range("^1.0.0 || ^3.0.0")
    assert "1.5.0" in r
    assert "3.1.0" in r
    assert "2.0.0" not in r


def test_operator_with_space():
    assert Range(">= 1.2.0 < 1.3.0").contains("1.2.5")


def test_hyphen_range_full_versions():
    r = Range("1.2.3 - 2.3.4")
    assert r.contains("1.2.3")
    assert r.contains("2.3.4")
    assert not r.contains("2.3.5")


def test_hyphen_range_partial_lower():
    assert Range("1.2 - 2.3.4").contains("1.2.0")


def test_prerelease_excluded_by_default():
    assert not Range("^1.2.0").contains("1.3.0-beta.1")
    assert Range("^1.2.0").contains("1.3.0-beta.1", include_prerelease=True)


def test_prerelease_allowed_when_named():
    assert Range(">=1.3.0-beta.1 <2.0.0").contains("1.3.0-beta.2")


def test_max_and_min_satisfying():
    versions = ["1.0.0", "1.4.2", "1.10.0", "2.0.0", "0.9.0"]
    r = Range("^1.0.0")
    assert r.max_satisfying(versions) == Version(1, 10, 0)
    assert r.min_satisfying(versions) == Version(1, 0, 0)
    assert Range("^5").max_satisfying(versions) is None


def test_contains_non_version_is_false():
    assert 1 not in Range("*")


def test_str():
    assert str(Range("^1.2.3")) == ">=1.2.3 <2.0.0"
    assert str(Range("~1.2 || 3.x")) == ">=1.2.0 <1.3.0 || >=3.0.0 <4.0.0"
