#!/usr/bin/env bash
# Install the real Claude Code CLI into a cache outside the checkout and print
# the path of its `claude` binary.  Idempotent: a second run only prints the path.
#
#   AGENTFILE_TOOLS   cache root (default: $HOME/.cache/agentfile-tools)
#   CLAUDE_VERSION    npm version to install (default: the tested one below)
#
# The npm package @anthropic-ai/claude-code ships its native binary inside a
# per-platform registry package (@anthropic-ai/claude-code-linux-x64, ...); the
# wrapper's postinstall (install.cjs) copies or hard-links it over
# bin/claude.exe.  Nothing is downloaded from outside the npm registry.  If the
# postinstall did not run (npm refusing install scripts), we run it ourselves.
set -euo pipefail

CLAUDE_VERSION="${CLAUDE_VERSION:-2.1.330}"
TOOLS="${AGENTFILE_TOOLS:-$HOME/.cache/agentfile-tools}"
DIR="$TOOLS/claude-$CLAUDE_VERSION"
BIN="$DIR/node_modules/.bin/claude"
PKG="$DIR/node_modules/@anthropic-ai/claude-code"

runs() { "$BIN" --version >/dev/null 2>&1; }

if ! command -v npm >/dev/null 2>&1; then
    echo "install_claude.sh: npm not found" >&2
    exit 2
fi

if [ ! -x "$BIN" ] || ! runs; then
    mkdir -p "$DIR"
    npm install --silent --no-audit --no-fund --prefix "$DIR" \
        "@anthropic-ai/claude-code@$CLAUDE_VERSION" >&2
fi

if ! runs && [ -f "$PKG/install.cjs" ]; then
    (cd "$PKG" && node install.cjs) >&2 || true
fi

if ! runs; then
    echo "install_claude.sh: $BIN does not run" >&2
    exit 1
fi
echo "$BIN"
