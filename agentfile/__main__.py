"""`python -m agentfile`."""

try:
    from agentfile.entry import main
except KeyboardInterrupt:  # a Ctrl-C as it starts: an interruption, no traceback
    raise SystemExit(130) from None

raise SystemExit(main())
