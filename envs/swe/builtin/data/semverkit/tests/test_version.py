import pytest
from semverkit import InvalidVersion, Version


def test_parse_plain():
    v = Version.parse("1.2.3")
    assert (v.major, v.minor, v.patch) == (1, 2, 3)
    assert v.prerelease == ()
    assert not v.is_prerelease


def test_parse_leading_v_and_whitespace():
    assert Version.parse(" v2.0.10 ") == Version(2, 0, 10)


def test_parse_prerelease_and_build():
    v = Version.parse("1.0.0-rc.1+sha.abc123")
    assert v.prerelease == ("rc", "1")
    assert v.build == ("sha", "abc123")
    assert v.is_prerelease


@pytest.mark.parametrize("text", ["1.2", "1.2.3.4", "01.2.3", "1.2.3-", "1.2.3-01", "abc", ""])
def test_parse_rejects_invalid(text):
    with pytest.raises(InvalidVersion):
        Version.parse(text)


def test_str_round_trip():
    for text in ["0.0.1", "1.2.3-alpha.7", "10.20.30+meta", "1.0.0-x.y.z+b.1"]:
        assert str(Version.parse(text)) == text


def test_repr():
    assert repr(Version.parse("1.2.3-rc.1")) == "Version('1.2.3-rc.1')"


def test_ordering_of_numbers():
    assert Version.parse("1.2.3") < Version.parse("1.2.10")
    assert Version.parse("1.9.0") < Version.parse("1.10.0")
    assert Version.parse("2.0.0") > Version.parse("1.99.99")


def test_prerelease_before_release():
    assert Version.parse("1.0.0-rc.1") < Version.parse("1.0.0")
    assert Version.parse("1.0.0") > Version.parse("1.0.0-alpha")


def test_prerelease_numeric_identifiers_compare_as_numbers():
    assert Version.parse("1.0.0-rc.2") < Version.parse("1.0.0-rc.10")


def test_prerelease_alphanumeric_compare_lexically():
    assert Version.parse("1.0.0-alpha") < Version.parse("1.0.0-beta")


def test_sorted():
    texts = ["1.0.0", "0.9.0", "1.0.0-rc.1", "1.0.1", "1.0.0-beta"]
    assert [str(v) for v in sorted(Version.parse(t) for t in texts)] == [
        "0.9.0",
        "1.0.0-beta",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
    ]


def test_bumps():
    v = Version.parse("1.2.3")
    assert str(v.bump_major()) == "2.0.0"
    assert str(v.bump_minor()) == "1.3.0"
    assert str(v.bump_patch()) == "1.2.4"


def test_bump_prerelease():
    assert str(Version.parse("1.2.3").bump_prerelease()) == "1.2.4-rc.0"
    assert str(Version.parse("1.2.4-rc.0").bump_prerelease()) == "1.2.4-rc.1"
    assert str(Version.parse("1.2.4-beta").bump_prerelease()) == "1.2.4-beta.0"


def test_release_drops_prerelease():
    assert Version.parse("3.1.4-dev.2").release() == Version(3, 1, 4)


def test_coerce():
    assert Version.coerce("1") == Version(1, 0, 0)
    assert Version.coerce("release-2.5") == Version(2, 5, 0)
    assert Version.coerce("v1.2.3.4") == Version(1, 2, 3)
    with pytest.raises(InvalidVersion):
        Version.coerce("latest")
