#!/usr/bin/env bash
# Install the real OpenAI Codex CLI into a cache outside the checkout and print
# the path of its `codex` binary.  Idempotent: a second run only prints the path.
#
#   AGENTFILE_TOOLS   cache root (default: $HOME/.cache/agentfile-tools)
#   CODEX_VERSION     npm version to install (default: the tested one below)
#
# The npm package @openai/codex ships its native binary inside a per-platform
# registry package (@openai/codex-linux-x64 -> @openai/codex@VERSION-linux-x64),
# so nothing is downloaded from outside the npm registry.
set -euo pipefail

CODEX_VERSION="${CODEX_VERSION:-0.169.0}"
TOOLS="${AGENTFILE_TOOLS:-$HOME/.cache/agentfile-tools}"
DIR="$TOOLS/codex-$CODEX_VERSION"
BIN="$DIR/node_modules/.bin/codex"

if ! command -v npm >/dev/null 2>&1; then
    echo "install_codex.sh: npm not found" >&2
    exit 2
fi

if [ ! -x "$BIN" ] || ! "$BIN" --version >/dev/null 2>&1; then
    mkdir -p "$DIR"
    npm install --silent --no-audit --no-fund --prefix "$DIR" \
        "@openai/codex@$CODEX_VERSION" >&2
fi

if ! "$BIN" --version >/dev/null 2>&1; then
    echo "install_codex.sh: $BIN does not run" >&2
    exit 1
fi
echo "$BIN"
