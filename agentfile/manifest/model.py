"""The manifest as pydantic models (frozen, extra="forbid"); no I/O.

Both the Agentfile language and the YAML/JSON data form lower to one JSON document that these
models validate. Quantities are normalised (seconds, bytes, dollars, percent) so that the two
forms of one manifest give equal models. The JSON Schema in `schema/` is generated from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from agentfile import quantities as q

TARGET_NAME_PATTERN = r"^[A-Za-z0-9_.\/{}-]+$"
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
VARIABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
PROVIDERS = ("claude", "codex", "gemini", "aider", "command")


def _from_text(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return parse(value)
        return value

    return convert


def _money(value: Any) -> Any:
    if isinstance(value, str) and value.strip().startswith("$"):
        try:
            return float(value.strip()[1:])
        except ValueError:
            raise ValueError(f"'{value}' is not an amount of money (write e.g. $1.50)") from None
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


def _number_or(pattern: str, minimum: float = 0) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [{"type": "string", "pattern": pattern},
                                     {"type": "number", "minimum": minimum}]})


Duration = Annotated[float, Field(ge=0), BeforeValidator(_from_text(q.parse_duration)),
                     _number_or(q.DURATION_PATTERN)]
Size = Annotated[int, Field(ge=0), BeforeValidator(_from_text(q.parse_size)),
                 _number_or(q.SIZE_PATTERN)]
Percent = Annotated[float, Field(ge=0, le=100), BeforeValidator(_from_text(q.parse_percent)),
                    _number_or(q.PERCENT_PATTERN)]
Money = Annotated[float, Field(ge=0), BeforeValidator(_money),
                  WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0},
                                            {"type": "string", "pattern": r"^\$\d+(\.\d+)?$"}]})]
Tokens = Annotated[int, Field(ge=0), BeforeValidator(_from_text(q.parse_tokens)),
                   WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0},
                                             {"type": "string",
                                              "pattern": r"^\d+(\.\d+)?[kKmMG]?$"}]})]
Names = Annotated[list[str], BeforeValidator(_as_list),
                  WithJsonSchema({"anyOf": [{"type": "string"},
                                            {"type": "array", "items": {"type": "string"}}]})]
EnvValue = Annotated[str, BeforeValidator(_as_text),
                     WithJsonSchema({"type": ["string", "number", "boolean"]})]
TargetName = Annotated[str, StringConstraints(pattern=TARGET_NAME_PATTERN)]
# A Ray resource a node offers (`ray start --resources`): any name without spaces, but those
# agentfile asks for itself (1 CPU per target, its memory budget).
OWN_RESOURCES = ("CPU", "memory", "object_store_memory")


def _resource_name(name: str) -> str:
    if name in OWN_RESOURCES:
        raise ValueError(f"'{name}' is not for `resources`: a target on Ray asks for 1 CPU, and "
                         "its budget's memory, by itself")
    return name


ResourceName = Annotated[str, StringConstraints(pattern=r"^\S+$"),
                         AfterValidator(_resource_name)]
ResourceAmount = Annotated[float, Field(gt=0)]
_RESOURCES = ("Extra Ray resources each of its targets asks for with `--executor ray`, so it runs "
              "only on nodes that offer them (`ray start --resources '{\"gpu_box\": 1}'`), e.g. "
              "those where an agent's credentials live; `GPU` asks for GPUs. The local executor "
              "runs everything here and does not read them.")
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
VariableName = Annotated[str, StringConstraints(pattern=VARIABLE_PATTERN)]
Provider = Literal["claude", "codex", "gemini", "aider", "command"]
MergeMode = Literal["auto", "manual", "none"]
Terminal = Literal["tmux", "headless"]
Executor = Literal["local", "ray"]
WorktreeReuse = Literal["fresh", "reuse"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class FileRef(_Model):
    """`file("prompts/x.md")`: text read from a file relative to the manifest."""

    file: str = Field(
        examples=["prompts/backend.md"],
        description="The file's path, relative to the manifest.")


class DirRef(_Model):
    """`dir("apps/users")`: isolation in a directory of the main checkout."""

    dir: str = Field(
        examples=["apps/users"],
        description="The directory the target may change, relative to the repository root; a "
                    "change outside it ends the target as `violation`.")


Isolation = Literal["worktree", "branch", "none"] | DirRef


class Budget(_Model):
    """Limits of one target, or of a whole build: `budget = $1.50, 10m, 2GiB, 200k tokens`."""

    usd: Money | None = Field(
        default=None, examples=["$1.50", 20],
        description="The most it may spend, in dollars; over it, it is stopped (`over-budget`).")
    time: Duration | None = Field(
        default=None, examples=["30m", "1h30m"],
        description="The longest it may run (wall time); over it, it is stopped (`timeout`).")
    memory: Size | None = Field(
        default=None, examples=["2GiB", "512MiB"],
        description="The most resident memory its whole process tree may hold; over it, it is "
                    "stopped (`oom`).")
    tokens: Tokens | None = Field(
        default=None, examples=["200k", 150000],
        description="The most tokens it may use, as the agent reports them; over it, it is stopped"
                    " (`over-budget`).")


class DailyBudget(_Model):
    """One user's spend per calendar day, across repositories: `daily_budget = $50, alert 80%`."""

    usd: Money = Field(
        examples=["$50", 50],
        description="The most agents may spend in a calendar day, counted across every repository "
                    "and build of this user; at it, no more agent targets start that day.")
    alert: Percent | None = Field(
        default=None, examples=["80%"],
        description="Warn once when the day's spend reaches this share of `usd`.")


class Throttle(_Model):
    """Admission by measurement: `throttle = memory 85%, load 2.0, free 1GiB`."""

    memory: Percent | None = Field(
        default=None, examples=["85%"],
        description="Start nothing while the machine's memory in use is at or above this share; "
                    "suspend the youngest target while above it.")
    load: float | None = Field(
        default=None, ge=0, examples=[2.0],
        description="Start nothing while the 1-minute load average is at or above this.")
    free: Size | None = Field(
        default=None, examples=["1GiB"],
        description="Start a target only while available memory covers this plus the target's own "
                    "memory budget.")


class Price(_Model):
    """Dollars per million tokens, for providers that report tokens only."""

    input: float = Field(
        ge=0, examples=[1.25],
        description="Dollars per million input tokens.")
    output: float = Field(
        ge=0, examples=[10],
        description="Dollars per million output tokens.")


class Foreach(_Model):
    """Fan-out: one target per value of `var`, from exactly one source."""

    var: VariableName = Field(
        examples=["file"],
        description="The variable each instance binds, used as `{var}` in the target's name and "
                    "attributes.")
    glob: str | None = Field(
        default=None, examples=["src/**/*.py"],
        description="One instance per file matching this glob, relative to the manifest.")
    lines: str | None = Field(
        default=None, examples=["bugs.txt"],
        description="One instance per line of this file (blank lines and `#` lines skipped).")
    values: list[str] | None = Field(
        default=None, alias="list", examples=[["users", "orders"]],
        description="One instance per value of this list, in its order.")

    @model_validator(mode="after")
    def _one_source(self) -> Foreach:
        given = [k for k in ("glob", "lines", "values") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("foreach takes exactly one of glob, lines or list")
        return self


def _none_if_empty(value: _Model | None) -> _Model | None:
    """An empty table (`budget: {}`) means the same as none at all, in every form."""
    if value is not None and all(v is None for v in value.__dict__.values()):
        return None
    return value


_ISOLATION = ("Where a target runs: `worktree` (its own git worktree and branch, merged "
              "after), `branch` (the checkout, on its own branch), `dir(\"path\")` (a "
              "directory of the checkout, nothing outside it) or `none` (the checkout).")
_TERMINAL = ("`tmux` runs the process in a window of the build's tmux session "
             "(`agentfile attach`); `headless` (the default) does not.")
_SANDBOX = ("Run the target's processes under bubblewrap (Linux): the file system read-only but "
            "for its workspace (for `dir(\"…\")` that directory only), the run files agentfile "
            "hands its agent, its agent CLI's own state in the home directory and a private "
            "/tmp, so a write anywhere else fails inside the agent. The network stays "
            "available. Its `verify` runs there too. Needs `bwrap` (docs/sandbox.md).")
_SETUP = ("A shell command run in a target's worktree before it starts, e.g. `npm ci`: once "
          "when the worktree is made, and again only when `setup_inputs` change (with "
          "`worktrees = reuse`, per pooled worktree). Its output: the run's "
          "`setup/TARGET.log`; its failure fails the target. What it makes must be ignored by "
          "git (node_modules, .venv).")
_SETUP_INPUTS = ("Files (globs, relative to the repository root) whose content decides when "
                 "`setup` runs again in a reused worktree, e.g. `package-lock.json`.")
_MERGE = ("What becomes of worktree and branch targets' work: `auto` (merged into the build's "
          "integration branch, your branch fast-forwarded when all is clean), `manual` (merged, "
          "landing is yours) or `none` (every branch kept for review).")


class Options(_Model):
    """The `options:` block: settings of the whole build."""

    jobs: int | None = Field(
        default=None, ge=1, examples=[4],
        description="How many targets run at once (`-j N` overrides it; default: the number of "
                    "CPUs).")
    default: Names | None = Field(
        default=None, examples=["test"],
        description="What a bare `agentfile build` builds (default: every target).")
    agent: Identifier | None = Field(
        default=None, examples=["reviewer", "claude"],
        description="The agent of agent targets that name none: an agent's name or a provider "
                    "(default: claude).")
    isolation: Isolation | None = Field(
        default=None, examples=["worktree"],
        description=_ISOLATION + " Here, the default of agent targets (else worktree).")
    terminal: Terminal | None = Field(default=None, description=_TERMINAL, examples=["tmux"])
    sandbox: bool | None = Field(
        default=None, examples=[True],
        description=_SANDBOX + " Here, the default of agent targets (else false).")
    budget: Budget | None = Field(
        default=None, examples=[{"usd": 20, "time": "2h"}],
        description="The whole build's limits: once reached, nothing new starts, running agent "
                    "targets are stopped, and the build exits 3.")
    daily_budget: DailyBudget | None = Field(
        default=None, examples=[{"usd": 50, "alert": "80%"}],
        description="Your spend per calendar day, across repositories.")
    throttle: Throttle | None = Field(
        default=None, examples=[{"memory": "85%", "load": 2.0,
                                                              "free": "1GiB"}],
        description="Start targets only while the machine has room.")
    merge: MergeMode | None = Field(default=None, description=_MERGE, examples=["auto"])
    keep_runs: int | None = Field(
        default=None, ge=1, examples=[50],
        description="How many builds' run folders (.agentfile/runs/: logs, events, results) "
                    "to keep; older ones are removed as each build ends (default: 50).")
    rate_limit_wait: Duration | None = Field(
        default=None, examples=["30m"],
        description="How long a target may wait for a rate-limited provider (a retry-after, a "
                    "spent quota's reset) before it stops as `rate-limited` (default: as long "
                    "as the provider says).")
    executor: Executor | None = Field(
        default=None, examples=["ray"],
        description="Where worktree targets run: `local` (here, the default) or `ray` (as "
                    "tasks on the Ray cluster at $RAY_ADDRESS; `--executor` overrides it).")
    dotenv: str | None = Field(
        default=None, examples=[".env"],
        description="A dotenv file, relative to the manifest: its variables expand as `${NAME}` "
                    "(after the manifest's and the environment's) and reach every target's "
                    "environment; values of names with KEY, TOKEN, SECRET or PASSWORD are masked "
                    "in logs. A missing file defines nothing.")
    worktrees: WorktreeReuse | None = Field(
        default=None, examples=["reuse"],
        description="`fresh` (the default): each worktree target gets a new worktree, removed "
                    "after; `reuse`: a pool of worktrees (at most one per job slot) kept under "
                    ".agentfile/pool/ across builds, each reset to the target's base before it "
                    "runs (files git ignores, such as node_modules, stay).")
    setup: str | None = Field(default=None, examples=["npm ci"], description=_SETUP)
    setup_inputs: Names | None = Field(default=None, examples=[["package-lock.json"]],
                                       description=_SETUP_INPUTS)

    _empty_tables = field_validator("budget", "throttle")(_none_if_empty)


class Agent(_Model):
    """A named agent, `agent NAME: PROVIDER`: a provider with its settings."""

    provider: Provider = Field(
        examples=["claude"],
        description="The CLI that runs this agent's targets: claude (Claude Code), codex, gemini "
                    "(Gemini CLI), aider, or command (any program).")
    description: str | None = Field(
        default=None,
        description="What this agent is for, shown by `agentfile list`.")
    model: str | None = Field(
        default=None, examples=["claude-sonnet-4-5"],
        description="The model the CLI is asked to use.")
    args: list[str] = Field(
        default_factory=list, examples=[["--max-turns", "30"]],
        description="More arguments for the CLI.")
    env: dict[str, EnvValue] = Field(
        default_factory=dict, examples=[{"LOG_LEVEL": "debug"}],
        description="Environment variables for its targets' processes.")
    sandbox: bool | None = Field(
        default=None, examples=[True],
        description=_SANDBOX + " Here, for its targets (over `options.sandbox`).")
    max_parallel: int | None = Field(
        default=None, ge=1, examples=[2],
        description="At most this many of its targets run at once.")
    resources: dict[ResourceName, ResourceAmount] = Field(
        default_factory=dict, examples=[{"gpu_box": 1}], description=_RESOURCES)
    price: Price | None = Field(
        default=None, examples=[{"input": 3, "output": 15}],
        description="Dollars per million tokens, to count the cost of providers that report tokens"
                    " only.")
    command: str | None = Field(
        default=None, examples=["my-agent --prompt {prompt_file}"],
        description="For the `command` provider: the shell command that runs a target; "
                    "`{prompt_file}` names the file holding the prompt.")
    rate_limit_wait: Duration | None = Field(
        default=None, examples=["1h"],
        description="The options' `rate_limit_wait` for this agent's targets.")
    fallback: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, examples=[["claude-sonnet-4-5"]],
        description="Models to go on with, in order, once `model` has been rate limited or "
                    "overloaded for `fallback_after`: the next attempt uses the next one.")
    fallback_after: Duration = Field(
        default=0.0, examples=["2m"],
        description="How long the model may be rate limited before the next `fallback` model "
                    "takes over (default: at once).")
    relay: bool = Field(
        default=True, examples=[False],
        description="Send the CLI's requests through agentfile's relay on 127.0.0.1, which holds "
                    "each one until the provider has room (claude with an API key; a login is "
                    "never relayed). `false`: the CLI calls its API itself.")
    setup: str | None = Field(default=None, examples=["npm ci"],
                              description=_SETUP + " Here, for this agent's targets.")
    setup_inputs: Names | None = Field(default=None, examples=[["package-lock.json"]],
                                       description=_SETUP_INPUTS)


class Target(_Model):
    """A target: an agent target (`prompt`), a run target (`run`) or a group (neither)."""

    description: str | None = Field(
        default=None, examples=["Fix {bug}"],
        description="What the target does, shown by `agentfile list` (`{var}` of a fan-out "
                    "expands).")
    deps: list[TargetName] = Field(
        default_factory=list, examples=[["schema", "migrate"]],
        description="The targets that must succeed (or be up to date) first; a fan-out's stem "
                    "means all its instances.")
    agent: Identifier | None = Field(
        default=None, examples=["reviewer"],
        description="Who runs the prompt: an agent's name or a provider (default: `options.agent`,"
                    " else claude).")
    prompt: str | FileRef | None = Field(
        default=None,
        examples=["Create the database schema in db/schema.sql", {"file": "prompts/backend.md"}],
        description="What the agent is asked to do, or `file(\"path\")`; makes this an agent "
                    "target. Placeholders: `{deps.NAME.result}`, `{deps.NAME.diff}`, `{target}`, "
                    "`{run_id}`.")
    context: Names = Field(
        default_factory=list, examples=[["docs/architecture.md"]],
        description="Files put before the prompt.")
    run: str | None = Field(
        default=None, examples=["pytest -q"],
        description="A shell command; makes this a run target (success is exit 0).")
    verify: str | None = Field(
        default=None, examples=["pytest -q tests/models"],
        description="A shell command run after the agent or command; the target succeeds only when"
                    " it exits 0.")
    retries: int = Field(
        default=0, ge=0, examples=[2],
        description="Further attempts after a failure, each told why the last one failed.")
    isolation: Isolation | None = Field(
        default=None, examples=["worktree", {"dir": "apps/users"}],
        description=_ISOLATION + " Default: `options.isolation` for agent targets, none for "
                                 "others.")
    terminal: Terminal | None = Field(default=None, description=_TERMINAL, examples=["tmux"])
    sandbox: bool | None = Field(
        default=None, examples=[True],
        description=_SANDBOX + " Default: its agent's, else `options.sandbox` for agent "
                               "targets; false for run targets.")
    budget: Budget | None = Field(
        default=None, examples=[{"usd": 1.5, "time": "10m"}],
        description="This target's limits (all its attempts together).")
    inputs: Names = Field(
        default_factory=list, examples=[["src/**/*.py"]],
        description="Files whose content is part of the fingerprint: a change runs the target "
                    "again.")
    outputs: Names = Field(
        default_factory=list, examples=[["db/schema.sql"]],
        description="Files the target makes: while one is missing, it is not up to date.")
    always: bool = Field(
        default=False,
        description="Run it in every build, up to date or not.")
    env: dict[str, EnvValue] = Field(
        default_factory=dict, examples=[{"DATABASE_URL": "postgres://localhost/test"}],
        description="Environment variables for its processes (over its agent's).")
    resources: dict[ResourceName, ResourceAmount] = Field(
        default_factory=dict, examples=[{"gpu_box": 1}],
        description=_RESOURCES + " Over its agent's, name by name.")
    locks: Names = Field(
        default_factory=list, examples=[["db"]],
        description="Named locks: two targets holding one never run at the same time.")
    exclusive: bool = Field(
        default=False,
        description="Run it alone: it waits for running targets to end, and nothing starts while "
                    "it runs.")
    priority: int = Field(
        default=0, examples=[10],
        description="Among ready targets, higher starts first.")
    foreach: Foreach | None = Field(
        default=None, examples=[{"var": "file", "glob": "src/**/*.py"}],
        description="Fan-out: one target per value, the name holding `{var}`.")
    canary: int | None = Field(
        default=None, ge=1, examples=[3],
        description="For a fan-out: run its first N instances first, the rest only when all N "
                    "succeeded.")
    merge: MergeMode | None = Field(default=None, description=_MERGE + " Default: `options.merge`.",
                                    examples=["manual"])
    copy_files: Names = Field(
        default_factory=list, alias="copy", examples=[[".env"]],
        description="Untracked files copied from the checkout into its worktree (never committed),"
                    " such as a local `.env`.")
    setup: str | None = Field(default=None, examples=["npm ci"],
                              description=_SETUP + " Default: its agent's, else the options'.")
    setup_inputs: Names | None = Field(default=None, examples=[["package-lock.json"]],
                                       description=_SETUP_INPUTS)

    _empty_tables = field_validator("budget")(_none_if_empty)

    @property
    def kind(self) -> Literal["agent", "run", "group"]:
        if self.prompt is not None:
            return "agent"
        return "run" if self.run is not None else "group"


VarValue = str | int | float | bool


class Manifest(_Model):
    """A whole manifest, the same whichever form it was written in."""

    version: Literal[1] = Field(
        default=1,
        description="The manifest format's version: 1.")
    include: list[str] = Field(
        default_factory=list, examples=[["agents/common.yaml"]],
        description="Other manifests merged in first, relative to this file (each once).")
    vars: dict[VariableName, VarValue] = Field(
        default_factory=dict, examples=[{"MODEL": "claude-sonnet-4-5"}],
        description="Variables: `${NAME}` in any string expands to the value (then the "
                    "environment's; `agentfile build NAME=VALUE` overrides).")
    options: Options = Field(
        default_factory=Options,
        description="Settings of the whole build.")
    agents: dict[Identifier, Agent] = Field(
        default_factory=dict,
        description="Named agents: a provider with its settings.")
    targets: dict[TargetName, Target] = Field(
        default_factory=dict,
        description="What to build, by name (letters, digits, `_ - . /` and `{var}` for a "
                    "fan-out).")


def describe_isolation(isolation: str | DirRef) -> str:
    """As written in the language: `worktree`, `dir("apps/users")`."""
    return f'dir("{isolation.dir}")' if isinstance(isolation, DirRef) else isolation


TARGET_ATTRIBUTES = tuple(
    (field.alias or name) for name, field in Target.model_fields.items() if name != "deps"
)
AGENT_ATTRIBUTES = tuple(name for name in Agent.model_fields if name != "provider")
OPTION_NAMES = tuple(Options.model_fields)
