"""The command line: the only module that knows argv (argparse, make's letters).

`main(argv)` parses, calls one function in `agentfile.commands`, and maps every error to its
exit code without a traceback (SPEC 5.5).
"""

from __future__ import annotations

import argparse
import difflib
import errno
import os
import re
import sys
import traceback
from collections.abc import Sequence

from agentfile import __version__
from agentfile.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    AgentfileError,
    UsageError,
)


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with make's style of message, like every other usage error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        suggestion = self._suggestion(message)
        if message.startswith("argument COMMAND: invalid choice:"):
            message = f"unknown command {message.split(': ')[2].split(' (')[0]}"
        raise SystemExit(f"agentfile: error: {message}{suggestion}") from None

    def _suggestion(self, message: str) -> str:
        """'; did you mean ...?' for a mistyped command or option, as git says it."""
        if found := re.search(r"invalid choice: '([^']*)'", message):
            word = found.group(1)
            known = re.findall(r"'([^']*)'", message.partition("(choose from")[2])
        elif found := re.search(r"unrecognized arguments: (\S+)", message):
            word = found.group(1).split("=", 1)[0]
            known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        else:
            return ""
        close = difflib.get_close_matches(word, known, n=3, cutoff=0.6)
        return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


UNLIMITED = 0  # -j without a number: as many at once as there are targets (make's -j)


def _jobs(text: str) -> int:
    """-j's number: a whole number of at least 1 (build and plan alike)."""
    if text == "unlimited":
        return UNLIMITED
    try:
        jobs = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of jobs") from None
    if jobs < 1:
        raise argparse.ArgumentTypeError("needs a number of jobs of at least 1")
    return jobs


def _manifest_options(parser: argparse.ArgumentParser, *, short_file: bool = True) -> None:
    # SUPPRESS lets `-f` and `-C` stand before or after the command name.
    names = ("-f", "--file") if short_file else ("--file",)
    parser.add_argument(*names, metavar="FILE", default=argparse.SUPPRESS,
                        help="the manifest (default: Agentfile, found up to the git root)")
    parser.add_argument("-C", "--directory", metavar="DIR", default=argparse.SUPPRESS,
                        help="change to DIR first")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="agentfile", description="make for coding agents")
    parser.add_argument("--version", action="version", version=f"agentfile {__version__}")
    _manifest_options(parser)
    parser.set_defaults(file=None, directory=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    build = sub.add_parser("build", help="build targets (default: options.default, else all)")
    _manifest_options(build)
    build.add_argument("targets", nargs="*", metavar="TARGET",
                       help="targets to build, and NAME=VALUE to set a variable for this build")
    build.add_argument("-j", "--jobs", type=_jobs, metavar="N",
                       help="run at most N at once (-j alone: no limit)")
    build.add_argument("-k", "--keep-going", action="store_true",
                       help="after a failure, still run what does not depend on it")
    build.add_argument("-n", "--dry-run", action="store_true",
                       help="print what would run; start nothing, write nothing")
    build.add_argument("-B", "--always-make", action="store_true",
                       help="rebuild everything, up to date or not")
    build.add_argument("--retry-failed", action="store_true",
                       help="only the targets that failed or did not run in the last build")
    build.add_argument("--json", action="store_true", help="events as JSON lines on stdout")
    build.add_argument("-v", "--verbose", action="store_true",
                       help="show each target's output as it comes, as `target | line`")
    build.add_argument("--budget", metavar="$X", help="the most this build may spend")
    build.add_argument("--no-merge", action="store_true",
                       help="merge nothing: every worktree target's branch stays for review")
    build.add_argument("--squash", action="store_true",
                       help="land the build's work on your branch as one commit")
    build.add_argument("--keep-worktrees", action="store_true",
                       help="leave each target's worktree in place after it ends")
    build.add_argument("--tmux", action="store_true",
                       help="run every target in a window of the build's tmux session")
    build.add_argument("--max-memory", metavar="P%",
                       help="start nothing while memory in use is at or above P%%")
    build.add_argument("--max-load", type=float, metavar="L",
                       help="start nothing while the load average is at or above L")
    build.add_argument("--executor", choices=("local", "ray"),
                       help="where worktree targets run: here (default) or on a Ray cluster")
    build.add_argument("--ray-address", metavar="HOST:PORT",
                       help="the Ray cluster to use (default: $RAY_ADDRESS)")

    check = sub.add_parser("check", help="load and validate the manifest; exit 0 or 2")
    _manifest_options(check)
    check.add_argument("--json", action="store_true", help="machine-readable output")

    listing = sub.add_parser("list", help="targets with kind, agent, isolation and description")
    _manifest_options(listing)
    listing.add_argument("targets", nargs="*", metavar="TARGET",
                         help="only these and what they need")
    listing.add_argument("--names", action="store_true", help=argparse.SUPPRESS)
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    plan = sub.add_parser("plan", help="waves, critical path, sequential vs parallel estimate")
    _manifest_options(plan)
    plan.add_argument("targets", nargs="*", metavar="TARGET")
    plan.add_argument("-j", "--jobs", type=_jobs, metavar="N",
                      help="job slots to estimate with (-j alone: no limit)")
    plan.add_argument("--executor", choices=("local", "ray"),
                      help="say which targets a build with this executor runs where")
    plan.add_argument("--json", action="store_true", help="machine-readable output")

    graph = sub.add_parser("graph", help="the dependency graph after fan-out")
    _manifest_options(graph)
    graph.add_argument("targets", nargs="*", metavar="TARGET",
                       help="only these and what they need")
    graph.add_argument("--format", choices=("dot", "mermaid", "json"), default="dot")

    schema = sub.add_parser("schema", help="print the JSON Schema of the data form")
    schema.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead")

    convert = sub.add_parser("convert", help="between the Agentfile language and YAML/JSON")
    convert.add_argument("source", metavar="FILE")
    convert.add_argument("--to", required=True, choices=("yaml", "json", "agentfile"))
    convert.add_argument("-o", "--output", metavar="OUT", help="write to OUT, not stdout")

    runs = sub.add_parser("runs", help="past builds in this repository, newest first")
    _manifest_options(runs)
    runs.add_argument("--limit", type=int, default=20, metavar="N")
    runs.add_argument("--json", action="store_true", help="machine-readable output")

    logs = sub.add_parser("logs", help="a target's log (the latest run that has one)")
    _manifest_options(logs, short_file=False)  # -f is --follow here, as in tail
    logs.add_argument("target", metavar="TARGET")
    logs.add_argument("--run", metavar="ID", help="from this run")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing while the target runs")
    shown = logs.add_mutually_exclusive_group()
    shown.add_argument("--result", action="store_true",
                       help="its agent's final message (of its last attempt)")
    shown.add_argument("--raw", action="store_true",
                       help="its agent's output stream as the CLI wrote it (JSON lines)")
    logs.add_argument("--json", action="store_true",
                      help="JSON lines: {run, target, line} (with --result: one object)")

    status = sub.add_parser("status", help="the build running now in this repository")
    _manifest_options(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", action=argparse.BooleanOptionalAction, default=None,
                        help="refresh until the build ends (default: on a terminal)")

    report = sub.add_parser("report", help="a finished build: per-target table and timeline")
    _manifest_options(report)
    report.add_argument("run", nargs="?", metavar="RUN")
    report.add_argument("--html", metavar="FILE", help="write a self-contained HTML page")
    report.add_argument("--json", action="store_true", help="machine-readable output")

    stats = sub.add_parser("stats", help="what agents spent, from your ledger across repos")
    stats.add_argument("--by", choices=("day", "agent", "target", "repo"), default="day")
    stats.add_argument("--json", action="store_true", help="machine-readable output")

    attach = sub.add_parser("attach", help="attach to the tmux session of the running build "
                            "(switch to it inside tmux)")
    _manifest_options(attach)
    attach.add_argument("target", nargs="?", metavar="TARGET",
                        help="at the window of this running target")

    clean = sub.add_parser("clean", help="remove the worktrees, branches and tmux sessions "
                           "agentfile made (never unmerged work without --force)")
    _manifest_options(clean)
    clean.add_argument("--run", metavar="ID", help="what this run left (default: the last "
                       "and every build that died)")
    clean.add_argument("--all", action="store_true", dest="every", help="what every run left")
    clean.add_argument("-n", "--dry-run", action="store_true", help="say what would go")
    clean.add_argument("--force", action="store_true",
                       help="also remove work merged nowhere and dirty worktrees")
    clean.add_argument("--json", action="store_true",
                       help="what was removed (or would be) and kept, as JSON")
    clean.add_argument("--runs", nargs="?", const=-1, type=int, metavar="N",
                       help="instead, remove old builds' run folders, keeping the newest N "
                       "(default: options.keep_runs, else 50)")

    sub.add_parser("lsp", help="the language server, on stdin/stdout (for editors)")
    completion = sub.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=("bash", "zsh", "fish"))

    init = sub.add_parser("init", help="write a commented starter Agentfile")
    _manifest_options(init)
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser


_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _variables(words: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """`build a NAME=VALUE b`: the targets, and the variables set for this build (as make's
    `make VAR=x`); a target's name never holds `=`."""
    targets: list[str] = []
    variables: dict[str, str] = {}
    for word in words:
        name, sign, value = word.partition("=")
        if not sign:
            targets.append(word)
        elif _VARIABLE.fullmatch(name):
            variables[name] = value
        else:
            raise UsageError(f"'{word}': a variable is set as NAME=VALUE, its name made of "
                             "letters, digits and _, not starting with a digit")
    return targets, variables


def _dispatch(args: argparse.Namespace) -> int:
    if args.directory:
        try:
            os.chdir(args.directory)
        except OSError as err:
            raise UsageError(f"cannot change to {args.directory}: {err.strerror}") from None
    name = args.command
    if name == "build":
        from agentfile.commands.build import BuildOptions, build

        targets, variables = _variables(args.targets)
        return build(file=args.file, options=BuildOptions(
            targets=targets, variables=variables, jobs=args.jobs, keep_going=args.keep_going,
            dry_run=args.dry_run, force=args.always_make, retry_failed=args.retry_failed,
            as_json=args.json, budget=args.budget, no_merge=args.no_merge,
            squash=args.squash,
            keep_worktrees=args.keep_worktrees, max_memory=args.max_memory,
            max_load=args.max_load, tmux=args.tmux, verbose=args.verbose,
            executor=args.executor, ray_address=args.ray_address))
    if name == "check":
        from agentfile.commands.check import check

        return check(file=args.file, as_json=args.json)
    if name == "list":
        from agentfile.commands.listing import list_targets

        return list_targets(file=args.file, as_json=args.json, targets=args.targets,
                            names_only=args.names)
    if name == "plan":
        from agentfile.commands.plan import plan

        return plan(file=args.file, targets=args.targets, jobs=args.jobs, as_json=args.json,
                    executor=args.executor)
    if name == "graph":
        from agentfile.commands.graph import graph

        return graph(file=args.file, fmt=args.format, targets=args.targets)
    if name == "schema":
        from agentfile.commands.schema import schema

        return schema(output=args.output)
    if name == "convert":
        from agentfile.commands.convert import convert

        return convert(source=args.source, to=args.to, output=args.output)
    if name in ("runs", "logs", "status", "attach"):
        from agentfile.commands import history

        if name == "runs":
            if not 1 <= args.limit <= 1_000_000:
                raise UsageError("--limit needs a number of runs from 1 to 1000000")
            return history.runs(file=args.file, limit=args.limit, as_json=args.json)
        if name == "logs":
            return history.logs(file=args.file, target=args.target, run=args.run,
                                follow=args.follow, result=args.result, raw=args.raw,
                                as_json=args.json)
        if name == "status":
            return history.status(file=args.file, as_json=args.json, watch=args.watch)
        return history.attach(file=args.file, target=args.target)
    if name == "report":
        from agentfile.commands.report import report

        return report(file=args.file, run=args.run, html=args.html, as_json=args.json)
    if name == "clean":
        from agentfile.commands.clean import clean

        if args.runs is not None:
            from agentfile.commands.clean import clean_runs

            return clean_runs(file=args.file, keep=None if args.runs == -1 else args.runs,
                              dry_run=args.dry_run)
        return clean(file=args.file, run=args.run, every=args.every, dry_run=args.dry_run,
                     force=args.force, as_json=args.json)
    if name == "stats":
        from agentfile.commands.stats import stats

        return stats(by=args.by, as_json=args.json)
    if name == "completion":
        from agentfile.commands.completion import completion

        return completion(shell=args.shell, parser=build_parser())
    if name == "lsp":
        from agentfile.lsp.server import serve

        return serve()
    if name == "init":
        from agentfile.commands.init import init

        return init(file=args.file, force=args.force)
    build_parser().print_help()
    return EXIT_USAGE


def _bare_jobs(argv: Sequence[str]) -> list[str]:
    """make's `-j` without a number means no limit: a `-j` not followed by a number is
    given the value `unlimited`, so that `build -j lint` still builds lint."""
    words = list(argv)
    for i, word in enumerate(words):
        if word == "--":
            break
        if word in ("-j", "--jobs") and (i + 1 == len(words)
                                         or not words[i + 1].lstrip("-").isdigit()):
            words[i] = "--jobs=unlimited"
    return words


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse; an unknown option is reported with the usage of the command it was given to
    (argparse's top level would print its own usage)."""
    args, extra = parser.parse_known_args(_bare_jobs(argv))
    if extra:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        owner = commands.choices.get(args.command, parser) if args.command else parser
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _damaged_state(err: Exception) -> AgentfileError | None:
    """A value agentfile could not use (a number that is text, JSON that is not) read from a
    state database with a damaged row: that row, and what to do, instead of an internal
    error. Looked for only once something failed so."""
    if not isinstance(err, (ValueError, TypeError, KeyError, AttributeError)):
        return None
    from agentfile.records import state

    for path in sorted(state.OPENED):
        where = state.damaged_rows(path)
        if where is not None:
            return state.damaged_row_error(path, where)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, sys.argv[1:] if argv is None else argv)
        return _dispatch(args)
    except AgentfileError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_code
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
            return EXIT_USAGE
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        print("agentfile: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`agentfile list | head`): not an error of ours.
        sys.stderr.close()
        return 0
    except Exception as err:
        if os.environ.get("AGENTFILE_DEBUG"):
            traceback.print_exc()
        if getattr(err, "errno", None) == errno.ENOSPC or "disk is full" in str(err):
            # Not a bug: the machine's. The next build records this one as died.
            print(f"agentfile: no space left on the disk ({err}); free some and build again",
                  file=sys.stderr)
            return EXIT_FAILED
        damaged = _damaged_state(err)
        if damaged is not None:
            print(damaged.render(), file=sys.stderr)
            return damaged.exit_code
        if type(err).__module__ == "sqlite3":
            # The state database, shared with other agentfiles and open to anyone: locked by
            # another process, or changed behind agentfile's back.
            print(f"agentfile: the build state (.agentfile/state.sqlite) cannot be used: "
                  f"{err}. If another process holds it, wait for it or stop it; if it is "
                  "damaged, move it aside and agentfile starts a new one", file=sys.stderr)
            return EXIT_USAGE
        print(f"agentfile: internal error: {type(err).__name__}: {err}\n"
              "(this is a bug in agentfile; AGENTFILE_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EXIT_FAILED
