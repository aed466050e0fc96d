"""The handful of named exceptions mentorgym raises.

Inside an episode, tool failures and timeouts are observations, never exceptions;
these are for problems a user must fix (a missing engine, a bad config, a dead server).
"""


class MentorgymError(Exception):
    """Base class: every error mentorgym raises on purpose."""


class ConfigError(MentorgymError, ValueError):
    """A config, agent spec or argument is invalid; the message says which and how to fix it."""


class SandboxError(MentorgymError):
    """A sandbox could not be created or has died."""


class DockerUnavailableError(SandboxError):
    """No Docker engine answered."""


class PolicyError(MentorgymError):
    """A policy backend failed (a server error after retries, a model that cannot load)."""


class RequestError(PolicyError):
    """One request was refused for what it asked (a prompt past the context window, an HTTP
    4xx): the episode that sent it ends truncated with the reason, and the run goes on."""
