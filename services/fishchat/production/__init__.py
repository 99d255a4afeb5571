"""Production implementations of the chat core's interfaces (`fishchat.domain.ports`).

One subpackage per backing server: MariaDB (accounts, groups), Redis (presence, tokens, idempotency),
Kafka (the message log), HBase (timelines) and etcd (versions, snowflake machine ids, the registry).
Each behaves exactly as its embedded counterpart in `fishchat.embedded`, as the contract suites in
`tests/contract/` check against the real servers.
"""
