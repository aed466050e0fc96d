from dotenvkit import expand, parse


def test_braced_and_bare():
    env = {"A": "1", "B": "2"}
    assert expand("${A}-$B", env) == "1-2"


def test_unknown_is_empty():
    assert expand("x${NOPE}y", {}) == "xy"


def test_default_when_unset():
    assert expand("${PORT:-8080}", {}) == "8080"


def test_default_not_used_when_set():
    assert expand("${PORT:-8080}", {"PORT": "9000"}) == "9000"


def test_escaped_dollar():
    assert expand("cost \\$5", {}) == "cost $5"


def test_parse_expands_from_earlier_lines():
    assert parse("HOST=db\nURL=pg://${HOST}/x") == {"HOST": "db", "URL": "pg://db/x"}


def test_parse_expands_from_env_argument():
    assert parse("A=${HOME_DIR}/bin", env={"HOME_DIR": "/home/u"}) == {"A": "/home/u/bin"}


def test_no_interpolation():
    assert parse("A=${B}", interpolate=False) == {"A": "${B}"}
