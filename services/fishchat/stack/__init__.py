"""The real-server stack for development and tests: `fishchat-stack up|down|status|env`."""

from fishchat.stack.base import StackError
from fishchat.stack.components import COMPONENTS, Stack

__all__ = ["COMPONENTS", "Stack", "StackError"]
