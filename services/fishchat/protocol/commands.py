"""Command ids, error codes and the other constants of FishChat's client wire protocol.

The values of FishChatServer2 (`protocol/external/cmd.go`, `common/ecode/common.go`) are kept as they
were, so an original client understands every frame it already knew; FishChat's additions take values
the original never used. Error codes are grouped by their leading digits:

- `1xxxx`: the request itself is wrong (framing, command, field values, rate).
- `90xxx`: the server failed; the same request may succeed later.
- `91xxx`: data, `92xxx`: gateway, `93xxx`: authentication and session, `94xxx`: users,
  `95xxx`: groups.

A reply carries `errCode` with its text in `errStr`; `ERR_STR` holds the texts (the original ones
verbatim).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from fishchat.errcodes import ERR_STR, ErrCode, err_str

__all__ = ["ERR_STR", "Cmd", "ErrCode", "MsgType", "ReconnectReason", "err_str"]


class Cmd(IntEnum):
    """The `cmd` (field 1) of every client-protocol frame; a request and its reply share the id."""

    #: Client -> gateway: which access server to use; the reply (ResSelectAccessServerForClient) has it too.
    REQ_ACCESS_SERVER = 10001
    #: ReqLogin; replied with the Error layout {20001, errCode, errStr}.
    LOGIN = 20001
    #: ReqPing (heartbeat); replied with the Error layout {20002, errCode, errStr}.
    PING = 20002
    #: ReqSendP2PMsg and its ack ResSendP2PMsg (also the original's legacy direct push).
    SEND_P2P_MSG = 20003
    #: ReqAcceptP2PMsgAck / ResAcceptP2PMsgAck (dispatched by FishChat; the original ignored it).
    ACCEPT_P2P_MSG_ACK = 20004
    #: ReqSendGroupMsg and its ack ResSendGroupMsg.
    SEND_GROUP_MSG = 20005
    #: ReqSyncMsg / ResSyncMsg: messages after the client's cursor, paged.
    SYNC_MSG = 20006
    #: Server -> client ResNotify: new messages are stored; sync.
    NOTIFY = 20007
    #: FishChat: ReqLogout / ResLogout (the original defined the messages without a cmd id).
    LOGOUT = 20008
    #: FishChat: server -> client ResReconnect: this connection ends; reconnect elsewhere and sync.
    RECONNECT = 20009
    #: FishChat: ReqMark / ResMark "delivered up to version V" of a conversation.
    MARK_DELIVERED = 20010
    #: FishChat: ReqMark / ResMark "read up to version V" of a conversation.
    MARK_READ = 20011
    #: Server -> client Error: a frame the server could not understand or a failure outside any reply.
    ERR_SERVER = 90001


class MsgType(StrEnum):
    """`msgType` of a stored message (offsetMsg.msgType), as in the original."""

    P2P = "p2p"
    GROUP = "group"
    #: FishChat receipts (entries made by ReqMark): "delivered up to" and "read up to".
    DELIVERED = "delivered"
    READ = "read"


class ReconnectReason(StrEnum):
    """`ResReconnect.reason`: why the server ends a connection and asks the client to reconnect."""

    #: The access server is shutting down or scaling in; reconnect through the gateway.
    DRAINING = "draining"
    #: The same uid and device logged in on another connection; this one is superseded.
    REPLACED = "replaced"
    #: The session's token was revoked (logout elsewhere, password change); log in again.
    REVOKED = "revoked"
