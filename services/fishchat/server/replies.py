"""Domain results and failures -> wire replies: the pure part of the access and gateway roles.

Kept apart from the connection handling so the mapping can be tested without sockets:

- a sync page becomes a ResSyncMsg that always fits one frame (entries are dropped from the end, and
  `more` set, if the domain's size estimate was short), with `groupID`, version, timestamp and the
  server's snowflake id kept;
- a send result becomes its ack, echoing the request's ids and adding version, server time and the
  server's snowflake id;
- any exception becomes the reply of the request's own command with the code of `code_of` and a
  client-safe text (`message_of`), so internal details never leak.
"""

from __future__ import annotations

from google.protobuf.message import Message

from fishchat.domain.errors import code_of, message_of
from fishchat.domain.messaging import parse_receipt_body
from fishchat.domain.records import SendResult, ServiceInstance, StoredMessage, SyncPage
from fishchat.proto.gen.external import access_pb2, gateway_pb2
from fishchat.protocol.codec import MAX_PAYLOAD, ProtocolError
from fishchat.protocol.commands import ErrCode, err_str
from fishchat.protocol.frames import (
    access_server_reply,
    error_reply,
    fit_sync_reply,
    no_access_server_reply,
    reply_for,
    send_group_ack,
    send_p2p_ack,
)


def offset_msg(message: StoredMessage) -> access_pb2.offsetMsg:
    """One timeline row as a sync entry (groupID kept, unlike the original's logic service); a receipt's
    body becomes markVersion and markServerMsgID."""
    if message.msg_type.is_receipt:
        mark_version, mark_server_msg_id = parse_receipt_body(message.body)
        return access_pb2.offsetMsg(
            sourceUID=message.source_uid,
            targetUID=message.target_uid,
            groupID=message.group_id,
            msgType=message.msg_type,
            msgID=message.msg_id,
            version=message.version,
            timestamp=message.timestamp_ms,
            serverMsgID=message.server_msg_id,
            markVersion=mark_version,
            markServerMsgID=mark_server_msg_id,
        )
    return access_pb2.offsetMsg(
        sourceUID=message.source_uid,
        targetUID=message.target_uid,
        groupID=message.group_id,
        msgType=message.msg_type,  # a StrEnum: its text
        msgID=message.msg_id,
        msg=message.body,
        version=message.version,
        timestamp=message.timestamp_ms,
        serverMsgID=message.server_msg_id,
    )


def sync_reply(
    request: access_pb2.ReqSyncMsg, page: SyncPage, *, max_payload: int = MAX_PAYLOAD
) -> access_pb2.ResSyncMsg:
    """The ResSyncMsg for `page`; currentID is the cursor to send next, `more` says sync again now.

    Receipt entries go only to clients that ask for them (`receipts`); the others' cursor still moves
    past them, so an original client sees its timeline as before.
    """
    shown = [m for m in page.messages if request.receipts or not m.msg_type.is_receipt]
    entries = [offset_msg(message) for message in shown]
    reply = fit_sync_reply(
        request.currentID if page.messages else page.cursor, entries, more=page.more, max_payload=max_payload
    )
    if len(reply.Msgs) == len(entries):
        # Everything fit: the next cursor is the page's, past receipts the client did not ask for.
        reply.currentID = page.cursor
    return reply


def p2p_ack(request: access_pb2.ReqSendP2PMsg, result: SendResult) -> access_pb2.ResSendP2PMsg:
    """The durable ack of a p2p send (a retried send gets the first send's version and time)."""
    ack = send_p2p_ack(
        request, version=result.version, server_msg_id=result.server_msg_id, timestamp=result.timestamp_ms
    )
    ack.msgID = result.msg_id  # the server-assigned id when the client sent none (legacy mode)
    return ack


def group_ack(request: access_pb2.ReqSendGroupMsg, result: SendResult) -> access_pb2.ResSendGroupMsg:
    ack = send_group_ack(
        request, version=result.version, server_msg_id=result.server_msg_id, timestamp=result.timestamp_ms
    )
    ack.msgID = result.msg_id
    return ack


def mark_ack(request: access_pb2.ReqMark, result: SendResult) -> access_pb2.ResMark:
    """The ack of a receipt: the marked version echoed and the receipt entry's version."""
    return access_pb2.ResMark(
        cmd=request.cmd,
        errCode=ErrCode.OK,
        errStr=err_str(ErrCode.OK),
        peerUID=request.peerUID,
        groupID=request.groupID,
        version=request.version,
        receiptVersion=result.version,
    )


def failure_reply(cmd: int | None, exc: BaseException, request: Message | None = None) -> Message:
    """The reply to a request that raised `exc`, in the layout of its command."""
    if isinstance(exc, ProtocolError):
        return reply_for(exc, request)
    return error_reply(cmd, code_of(exc), message_of(exc), request)


def code_reply(cmd: int | None, code: ErrCode, detail: str = "", request: Message | None = None) -> Message:
    """The reply for a refusal decided by the server itself (not logged in, draining, rate limited)."""
    text = f"{err_str(code)}: {detail}" if detail else None
    return error_reply(cmd, code, text, request)


def gateway_reply(instance: ServiceInstance | None) -> gateway_pb2.ResSelectAccessServerForClient:
    """ResSelectAccessServerForClient with the instance's client address (and WebSocket URL), or 92001
    without one."""
    if instance is None or not instance.client_address:
        return no_access_server_reply()
    return access_server_reply(instance.client_address, instance.ws_url)
