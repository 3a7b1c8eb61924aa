"""One module per subcommand; each function returns an exit code. `cli` imports only the
one it runs, so `agentfile check` does not pay for what `build` needs."""
