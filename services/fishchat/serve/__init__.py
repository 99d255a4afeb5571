"""`fishchat serve <role>`: each role of the production profile as its own process (design §2).

`config` is the typed configuration every role reads (TOML plus `FISHCHAT_<SECTION>_<KEY>`), `runtime`
what every role process shares (metrics, admin endpoints, etcd session and registry, gRPC server and
clients, the ready line, the drain order), and one module per role composes the domain services
over the production adapters and the gRPC clients of the roles it talks to.
"""
