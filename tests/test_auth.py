"""The one token rule of `serve`, `serve-model` and `view` (mentorgym/auth.py)."""

from mentorgym.auth import is_loopback, presented_token, token_matches


def test_loopback_names_only_this_machine() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.2", "::", "example.org"))


def test_the_token_comes_from_bearer_then_x_api_key() -> None:
    assert presented_token("Bearer abc", None) == "abc"
    assert presented_token("bearer  abc ", "other") == "abc"
    assert presented_token(None, "key") == "key"
    assert presented_token("Basic abc", "key") == "key"
    assert presented_token("Bearer ", None) is None
    assert presented_token(None, None) is None


def test_token_matches_only_the_exact_token() -> None:
    assert token_matches("s3cret", "s3cret")
    assert not token_matches("s3cre", "s3cret")
    assert not token_matches("", "s3cret") and not token_matches(None, "s3cret")
