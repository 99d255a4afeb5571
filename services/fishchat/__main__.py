"""`python -m fishchat ...` is the `fishchat` command."""

import sys

from fishchat.cli.main import main

sys.exit(main())
