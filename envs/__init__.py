"""Environments: the text Env contract, the registry, and the built-in envs."""

from mentorgym.envs.base import (
    Message,
    ParsedAction,
    TextEnv,
    TextSpace,
    Tool,
    ToolCall,
    format_tool_call,
    parse_action,
)
from mentorgym.envs.registry import list_envs, load_plugins, make, register_builtin

__all__ = [
    "Message",
    "ParsedAction",
    "TextEnv",
    "TextSpace",
    "Tool",
    "ToolCall",
    "format_tool_call",
    "list_envs",
    "load_plugins",
    "make",
    "parse_action",
    "register_builtin",
]
