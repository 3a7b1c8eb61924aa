"""The manifest: file -> typed model; nothing after it sees raw text."""
