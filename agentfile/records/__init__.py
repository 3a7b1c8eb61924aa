"""What a build records: state, events, the ledger, the on-disk layout and the build lock."""
