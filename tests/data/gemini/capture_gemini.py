"""Re-create the captures in this folder by driving the REAL Gemini CLI offline.

    npm install --prefix "$AGENTFILE_TOOLS/gemini-0.61.0" @google/gemini-cli@0.61.0
    python tests/data/gemini/capture_gemini.py [OUTDIR]       # default: this folder

A minimal stand-in for the Gemini API (``POST /v1beta/models/M:streamGenerateContent?alt=sse``)
runs on 127.0.0.1; the CLI is pointed at it with GOOGLE_GEMINI_BASE_URL, GEMINI_API_KEY and
``security.auth.selectedType = "gemini-api-key"`` in $HOME/.gemini/settings.json (without
that setting GOOGLE_GEMINI_BASE_URL selects the "gateway" auth type, which headless mode
rejects: "Invalid auth method selected.", exit 41).  ``-m`` is always given: with the default
model "auto" the CLI first asks a classifier model through ``:generateContent`` and retries
for ~100 s when the answer is not the JSON it wants.

Each case stores stdout as CASE.jsonl (or .json), stderr as CASE.stderr.txt; runs.json gets
argv, exit code, wall time and the request paths.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

JSON = dict[str, Any]
Usage = tuple[int, int, int]

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.61.0"
TOOLS = os.environ.get("AGENTFILE_TOOLS", os.path.expanduser("~/.cache/agentfile-tools"))
GEMINI = os.path.join(TOOLS, f"gemini-{VERSION}", "node_modules", ".bin", "gemini")
MODEL = "gemini-2.5-pro"


def text(t: str, usage: Usage = (1000, 20, 0)) -> JSON:
    return {"parts": [{"text": t}], "usage": usage}


def call(name: str, args: JSON, usage: Usage = (1000, 20, 0)) -> JSON:
    return {"parts": [{"functionCall": {"name": name, "args": args}}], "usage": usage}


def http_error(status: int, msg: str, st: str) -> JSON:
    return {"error": (status, msg, st)}


class GeminiStandin:
    """Answers generateContent / streamGenerateContent from a script, logs every request."""

    def __init__(self, script: list[JSON]) -> None:
        self.script, self.n = script, 0
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __enter__(self) -> GeminiStandin:
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _json(self, code: int, obj: JSON) -> None:
                d = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(d)))
                self.end_headers()
                self.wfile.write(d)

            def do_GET(self) -> None:
                outer.requests.append(("GET", self.path))
                self._json(
                    404, {"error": {"code": 404, "message": "no route", "status": "NOT_FOUND"}}
                )

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                outer.requests.append(("POST", self.path))
                path = self.path.split("?")[0]
                if path.endswith(":countTokens"):
                    return self._json(200, {"totalTokens": 42})
                if not (
                    path.endswith(":streamGenerateContent") or path.endswith(":generateContent")
                ):
                    return self._json(
                        404, {"error": {"code": 404, "message": "no route", "status": "NOT_FOUND"}}
                    )
                with outer.lock:
                    r = outer.script[min(outer.n, len(outer.script) - 1)]
                    outer.n += 1
                if "error" in r:
                    code, msg, st = r["error"]
                    return self._json(code, {"error": {"code": code, "message": msg, "status": st}})
                pin, pout, cached = r["usage"]
                resp = {
                    "candidates": [
                        {
                            "content": {"role": "model", "parts": r["parts"]},
                            "finishReason": "STOP",
                            "index": 0,
                        }
                    ],
                    "usageMetadata": {
                        "promptTokenCount": pin,
                        "candidatesTokenCount": pout,
                        "totalTokenCount": pin + pout,
                        "cachedContentTokenCount": cached,
                    },
                    "modelVersion": MODEL,
                    "responseId": f"standin-{outer.n}",
                }
                if path.endswith(":generateContent"):
                    return self._json(200, resp)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"data: " + json.dumps(resp).encode() + b"\r\n\r\n")
                self.wfile.flush()
                self.close_connection = True

        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = S(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    outdir = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else HERE)
    os.makedirs(outdir, exist_ok=True)
    if not os.path.exists(GEMINI):
        subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                os.path.dirname(os.path.dirname(os.path.dirname(GEMINI))),
                f"@google/gemini-cli@{VERSION}",
            ],
            check=True,
        )
    runs: dict[str, JSON] = {}
    tmp = tempfile.mkdtemp(prefix="agentfile-gemini-capture-")

    def make_home(name: str, settings_extra: JSON | None = None) -> tuple[str, str]:
        home, ws = os.path.join(tmp, name, "home"), os.path.join(tmp, name, "ws")
        os.makedirs(os.path.join(home, ".gemini"))
        os.makedirs(ws)
        settings: JSON = {"security": {"auth": {"selectedType": "gemini-api-key"}}}
        for k, v in (settings_extra or {}).items():
            settings.setdefault(k, {}).update(v)
        with open(os.path.join(home, ".gemini", "settings.json"), "w") as f:
            json.dump(settings, f)
        return home, ws

    def run(
        name: str,
        script: list[JSON],
        args: list[str],
        home: str,
        ws: str,
        ext: str = "jsonl",
        timeout: float = 600,
    ) -> None:
        with GeminiStandin(script) as srv:
            env = {
                "PATH": os.environ["PATH"],
                "HOME": home,
                "GEMINI_API_KEY": "standin-key",
                "GOOGLE_GEMINI_BASE_URL": srv.url,
                "LANG": "C.UTF-8",
            }
            t0 = time.monotonic()
            p = subprocess.run(
                [GEMINI, *args],
                cwd=ws,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            wall = round(time.monotonic() - t0, 2)
        with open(os.path.join(outdir, f"{name}.{ext}"), "w") as f:
            f.write(p.stdout)
        with open(os.path.join(outdir, f"{name}.stderr.txt"), "w") as f:
            f.write(p.stderr)
        runs[name] = {
            "argv": ["gemini", *args],
            "exit_code": p.returncode,
            "wall_seconds": wall,
            "requests": [f"{m} {path}" for m, path in srv.requests],
            "workspace_files": sorted(os.listdir(ws)),
        }
        print(f"{name}: rc={p.returncode} {wall}s {len(srv.requests)} requests", file=sys.stderr)

    common = ["-o", "stream-json", "-m", MODEL, "--skip-trust"]
    try:
        # 1. success: write_file + run_shell_command + final text, --yolo
        home, ws = make_home("success")
        sid = str(uuid.uuid4())
        run(
            "success",
            [
                call(
                    "write_file",
                    {"file_path": "hello.txt", "content": "hello\nworld\n"},
                    (1000, 20, 0),
                ),
                call(
                    "run_shell_command",
                    {"command": "cat hello.txt", "description": "show file"},
                    (1100, 25, 900),
                ),
                text("Created hello.txt (2 lines).", (1300, 15, 1000)),
            ],
            [
                "-p",
                "Create hello.txt containing hello and world.",
                *common,
                "--yolo",
                "--session-id",
                sid,
            ],
            home,
            ws,
        )
        runs["success"]["session_id_given"] = sid

        # 2. resume that session by its UUID: history is replayed, stats are this run's
        run(
            "resume",
            [text("Nothing left to do.", (2000, 10, 1500))],
            ["-p", "Anything left?", *common, "--yolo", "--resume", sid],
            home,
            ws,
        )

        # 3. same as 1 but in -o json (one object at the end)
        home, ws = make_home("success-json")
        run(
            "success-json",
            [
                call("write_file", {"file_path": "hello.txt", "content": "hello\n"}, (1000, 20, 0)),
                text("Created hello.txt.", (1200, 15, 800)),
            ],
            [
                "-p",
                "Create hello.txt.",
                "-o",
                "json",
                "-m",
                MODEL,
                "--skip-trust",
                "--approval-mode",
                "yolo",
            ],
            home,
            ws,
            ext="json",
        )

        # 4. no --yolo: in headless mode the write tools are not registered at all
        home, ws = make_home("no-yolo")
        run(
            "no-yolo",
            [
                call("write_file", {"file_path": "hello.txt", "content": "hello\n"}),
                text("I could not write the file."),
            ],
            ["-p", "Create hello.txt.", *common],
            home,
            ws,
        )

        # 5. API errors, no retries (general.maxAttempts = 1): exit code = HTTP status & 0xff
        for name, err in [
            (
                "fail-http400",
                http_error(
                    400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT"
                ),
            ),
            (
                "fail-http429",
                http_error(
                    429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED"
                ),
            ),
            ("fail-http500", http_error(500, "stand-in internal error", "INTERNAL")),
        ]:
            home, ws = make_home(name, {"general": {"maxAttempts": 1}})
            run(name, [err], ["-p", "say hi", *common, "--yolo"], home, ws)

        # 6. an error after a tool call already ran (usage so far is in the result stats)
        home, ws = make_home("fail-midturn", {"general": {"maxAttempts": 1}})
        run(
            "fail-midturn",
            [
                call("write_file", {"file_path": "one.txt", "content": "one\n"}, (1500, 20, 0)),
                http_error(500, "stand-in internal error", "INTERNAL"),
            ],
            ["-p", "Create one.txt and two.txt.", *common, "--yolo"],
            home,
            ws,
        )

        # 7. turn limit (model.maxSessionTurns = 1): exit 53
        home, ws = make_home("turn-limit", {"model": {"maxSessionTurns": 1}})
        run(
            "turn-limit",
            [
                call("write_file", {"file_path": "one.txt", "content": "one\n"}, (1500, 20, 0)),
                text("done"),
            ],
            ["-p", "Create one.txt.", *common, "--yolo"],
            home,
            ws,
        )

        # 8. untrusted folder (no --skip-trust): exit 55, nothing on stdout
        home, ws = make_home("untrusted")
        run("untrusted", [text("hi")], ["-p", "say hi", "-o", "stream-json", "-m", MODEL], home, ws)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    version = subprocess.run(
        [GEMINI, "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": tempfile.gettempdir()},
    ).stdout.strip()
    with open(os.path.join(outdir, "runs.json"), "w") as f:
        json.dump({"gemini_cli_version": version, "runs": runs}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
