"""FishChat's chat core without I/O: records, rules and the interfaces (ports) it needs from storage.

Everything here runs unchanged over the embedded backend (`fishchat.embedded`) and the production
one; servers call `ChatService` and run `MessageDelivery`.
"""

from fishchat.domain.clock import Clock, ManualClock, SystemClock
from fishchat.domain.delivery import MessageDelivery
from fishchat.domain.errors import ChatError, ErrCode, code_of, message_of
from fishchat.domain.ports import ChatPorts
from fishchat.domain.records import (
    AccessNode,
    Account,
    Group,
    IssuedToken,
    MsgType,
    Notice,
    Route,
    SendResult,
    ServiceInstance,
    Session,
    StoredMessage,
    SyncPage,
    TokenInfo,
    User,
)
from fishchat.domain.service import ChatService, bound_uid
from fishchat.domain.settings import ChatSettings

__all__ = [
    "AccessNode",
    "Account",
    "ChatError",
    "ChatPorts",
    "ChatService",
    "ChatSettings",
    "Clock",
    "ErrCode",
    "Group",
    "IssuedToken",
    "ManualClock",
    "MessageDelivery",
    "MsgType",
    "Notice",
    "Route",
    "SendResult",
    "ServiceInstance",
    "Session",
    "StoredMessage",
    "SyncPage",
    "SystemClock",
    "TokenInfo",
    "User",
    "bound_uid",
    "code_of",
    "message_of",
]
