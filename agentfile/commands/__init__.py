"""One module per subcommand; each function returns an exit code."""

from agentfile.commands.build import BuildOptions, build
from agentfile.commands.check import check
from agentfile.commands.clean import clean
from agentfile.commands.convert import convert
from agentfile.commands.graph import graph
from agentfile.commands.history import attach, logs, runs, status
from agentfile.commands.init import init
from agentfile.commands.listing import list_targets
from agentfile.commands.plan import plan
from agentfile.commands.report import report
from agentfile.commands.schema import schema

__all__ = ["BuildOptions", "attach", "build", "check", "clean", "convert", "graph", "init",
           "list_targets", "logs", "plan", "report", "runs", "schema", "status"]
