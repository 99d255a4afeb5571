"""FishChat's protocol definitions and the Python code generated from them.

The `.proto` files live here by protocol: `external/` is the client wire protocol (package `external`,
field numbers and command ids of FishChatServer2 kept), `rpc/` the internal gRPC services (package
`fishchat.rpc`). `build.py` (`python -m fishchat.proto.build`, `make proto`) generates the messages, the
gRPC stubs and their type stubs into `gen/`, which is never edited by hand nor committed; import them
as `fishchat.proto.gen.external.access_pb2`, `fishchat.proto.gen.rpc.logic_pb2_grpc` and so on.
"""
