"""The manifest as pydantic models (frozen, extra="forbid"); no I/O.

Both the Agentfile language and the YAML/JSON data form lower to one JSON document that these
models validate. Quantities are normalised (seconds, bytes, dollars, percent) so that the two
forms of one manifest give equal models. The JSON Schema in `schema/` is generated from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
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
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
VariableName = Annotated[str, StringConstraints(pattern=VARIABLE_PATTERN)]
Provider = Literal["claude", "codex", "gemini", "aider", "command"]
MergeMode = Literal["auto", "manual", "none"]
Terminal = Literal["tmux", "headless"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class FileRef(_Model):
    """`file("prompts/x.md")`: text read from a file relative to the manifest."""

    file: str


class DirRef(_Model):
    """`dir("apps/users")`: isolation in a directory of the main checkout."""

    dir: str


Isolation = Literal["worktree", "branch", "none"] | DirRef


class Budget(_Model):
    """Limits of one target, or of a whole build (SPEC 8)."""

    usd: Money | None = None
    time: Duration | None = None
    memory: Size | None = None
    tokens: Tokens | None = None


class DailyBudget(_Model):
    """One user's spend per calendar day, across repositories."""

    usd: Money
    alert: Percent | None = None


class Throttle(_Model):
    """Admission by measurement (SPEC 9)."""

    memory: Percent | None = None
    load: float | None = Field(default=None, ge=0)
    free: Size | None = None


class Price(_Model):
    """Dollars per million tokens, for providers that report tokens only."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class Foreach(_Model):
    """Fan-out: one target per value of `var`, from exactly one source."""

    var: VariableName
    glob: str | None = None
    lines: str | None = None
    values: list[str] | None = Field(default=None, alias="list")

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


class Options(_Model):
    """The `options:` block."""

    jobs: int | None = Field(default=None, ge=1)
    default: Names | None = None
    agent: Identifier | None = None
    isolation: Isolation | None = None
    terminal: Terminal | None = None
    budget: Budget | None = None
    daily_budget: DailyBudget | None = None
    throttle: Throttle | None = None
    merge: MergeMode | None = None

    _empty_tables = field_validator("budget", "throttle")(_none_if_empty)


class Agent(_Model):
    """`agent NAME: PROVIDER` (SPEC 7)."""

    provider: Provider
    description: str | None = None
    model: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, EnvValue] = Field(default_factory=dict)
    max_parallel: int | None = Field(default=None, ge=1)
    price: Price | None = None
    command: str | None = None


class Target(_Model):
    """A target (SPEC 2.2): an agent target (`prompt`), a run target (`run`) or a group."""

    description: str | None = None
    deps: list[TargetName] = Field(default_factory=list)
    agent: Identifier | None = None
    prompt: str | FileRef | None = None
    context: Names = Field(default_factory=list)
    run: str | None = None
    verify: str | None = None
    retries: int = Field(default=0, ge=0)
    isolation: Isolation | None = None
    terminal: Terminal | None = None
    budget: Budget | None = None
    inputs: Names = Field(default_factory=list)
    outputs: Names = Field(default_factory=list)
    always: bool = False
    env: dict[str, EnvValue] = Field(default_factory=dict)
    locks: Names = Field(default_factory=list)
    exclusive: bool = False
    priority: int = 0
    foreach: Foreach | None = None
    canary: int | None = Field(default=None, ge=1)
    merge: MergeMode | None = None
    copy_files: Names = Field(default_factory=list, alias="copy")

    _empty_tables = field_validator("budget")(_none_if_empty)

    @property
    def kind(self) -> Literal["agent", "run", "group"]:
        if self.prompt is not None:
            return "agent"
        return "run" if self.run is not None else "group"


VarValue = str | int | float | bool


class Manifest(_Model):
    """A whole manifest, the same whichever form it was written in."""

    version: Literal[1] = 1
    include: list[str] = Field(default_factory=list)
    vars: dict[VariableName, VarValue] = Field(default_factory=dict)
    options: Options = Field(default_factory=Options)
    agents: dict[Identifier, Agent] = Field(default_factory=dict)
    targets: dict[TargetName, Target] = Field(default_factory=dict)


def describe_isolation(isolation: str | DirRef) -> str:
    """As written in the language: `worktree`, `dir("apps/users")`."""
    return f'dir("{isolation.dir}")' if isinstance(isolation, DirRef) else isolation


TARGET_ATTRIBUTES = tuple(
    (field.alias or name) for name, field in Target.model_fields.items() if name != "deps"
)
AGENT_ATTRIBUTES = tuple(name for name in Agent.model_fields if name != "provider")
OPTION_NAMES = tuple(Options.model_fields)
