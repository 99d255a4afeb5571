"""The `fishchat` command: chat, accounts and groups for users, and `fishchat up` for the servers.

Each subcommand module has `register(subparsers)`, which adds its parser(s) and sets the handler with
`parser.set_defaults(handler=fn)`; `fn(args)` returns an exit code, or a coroutine that `main` runs
on uvloop and whose result is the exit code. `main` turns every `ClientError` into one line on stderr
and a non-zero exit status, never a traceback.

Exit codes: 0 done; 1 refused (by the server, or invalid input); 2 usage; 3 server unreachable or not
answering; 130 interrupted.
"""
