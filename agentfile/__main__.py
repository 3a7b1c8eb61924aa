"""`python -m agentfile`."""

from agentfile.entry import main

raise SystemExit(main())
