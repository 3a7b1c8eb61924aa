"""`python -m agentfile`."""

from agentfile.cli import main

raise SystemExit(main())
