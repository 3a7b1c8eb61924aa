"""Property tests of the manifest loader: the three forms of one manifest load to one model,
`convert` gives back what it was given, and no input makes `load()` fail with anything but a
ManifestError.

Where a property found a bug, the strategy below steers around it (see `STEER_AROUND`) and the
minimal input is kept as a strict xfail test at the end of this file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn

from agentfile import quantities as q
from agentfile.commands.convert import convert
from agentfile.errors import ManifestError
from agentfile.manifest import dataform
from agentfile.manifest.load import LoadedManifest, load, read_document
from agentfile.manifest.model import Manifest
from agentfile.manifest.render import to_agentfile, to_json, to_yaml
from agentfile.manifest.validate import SCHEMA_ID

SCHEMA_COPY = ".agentfile/agentfile.schema.json"  # where convert names the schema's copy
FORMS: dict[str, Callable[[dict[str, Any]], str]] = {
    "Agentfile": to_agentfile,
    "Agentfile.yaml": lambda doc: to_yaml(doc, SCHEMA_ID),
    "Agentfile.json": lambda doc: to_json(doc, SCHEMA_ID),
}
# The known bugs (each has a strict xfail test at the end of this file) that the strategies
# steer around so that the properties can check everything else. AGENTFILE_HUNT=1 lets the
# strategies reach them again (to check that a fix holds, or to hunt with more examples:
# AGENTFILE_PROPERTY_EXAMPLES=2000).
STEER_AROUND: frozenset[str] = frozenset()  # every bug found so far is fixed



def avoid(bug: str) -> bool:
    return bug in STEER_AROUND


EXAMPLES = int(os.environ.get("AGENTFILE_PROPERTY_EXAMPLES", "150"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- helpers -----------------------------------------------------------------------------------


@contextmanager
def written(name: str, content: str | bytes) -> Iterator[Path]:
    """The content in a file called `name`, in a fresh temporary directory."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        if isinstance(content, str):
            path.write_bytes(content.encode("utf-8", errors="surrogatepass"))
        else:
            path.write_bytes(content)
        yield path


def load_text(name: str, content: str | bytes) -> LoadedManifest | ManifestError:
    """Load `content` as the manifest `name`: the loaded manifest or the ManifestError.

    Any other exception propagates (and fails the test that called this)."""
    with written(name, content) as path:
        try:
            return load(path, environ={})
        except ManifestError as err:
            return err


def assert_well_reported(outcome: LoadedManifest | ManifestError) -> None:
    if isinstance(outcome, ManifestError):
        assert outcome.problems, "a ManifestError without problems"
        for problem in outcome.problems:
            assert problem.span.line >= 1, problem
            assert problem.span.column >= 1, problem


def load_ok(name: str, text: str) -> LoadedManifest:
    outcome = load_text(name, text)
    if isinstance(outcome, ManifestError):
        raise AssertionError(f"{name} did not load:\n{text}\n---\n{outcome.render()}")
    return outcome


# -- strategies: valid data-form documents -------------------------------------------------------

# Printable text (every category but controls, format characters, separators of lines and
# paragraphs, private use, surrogates and unassigned), plus newlines, tabs and the characters
# the Agentfile language treats specially.
_CHARS = st.characters(exclude_categories=("Cs", "Cc", "Cf", "Zl", "Zp", "Co", "Cn")) | (
    st.sampled_from('\n\t"\\{}$ #,=:[]'))


def _escape(text: str) -> str:
    """Braces doubled (literal braces); a trailing `$` kept away from a following `{`."""
    text = text.replace("{", "{{").replace("}", "}}")
    return text + " " if text.endswith("$") else text


_PLAIN = st.text(_CHARS, max_size=24).map(_escape)
_KEYWORDS = ("options", "include", "foreach", "in", "agent", "true", "false", "env")


def texts(variables: list[str], placeholders: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """Strings: plain text, literal braces, `{placeholder}`s and `${VAR}` references."""
    pieces: list[st.SearchStrategy[str]] = [_PLAIN]
    refs = [*placeholders, *(f"${{{name}}}" for name in variables)]
    if refs:
        pieces.append(st.sampled_from(refs))
    joined = st.lists(st.one_of(*pieces), max_size=5).map("".join)
    if variables:
        return joined | st.sampled_from([f"${{{name}}}" for name in variables])
    return joined


def _names(pattern: str) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True)


_TARGET_NAME = (_names(r"[a-z][a-z0-9_-]{0,8}")
                | st.tuples(_names(r"[a-z][a-z0-9_-]{0,8}"),
                            _names(r"[a-z][a-z0-9_-]{0,8}")).map("/".join)
                | st.sampled_from(_KEYWORDS))
_AGENT_NAME = _names(r"[a-z][a-z0-9_-]{0,8}")
_VAR_NAME = _names(r"[A-Z][A-Z0-9_]{0,6}")
_PLAIN_ENV_NAME = _names(r"[A-Za-z_][A-Za-z0-9_]{0,6}").filter(lambda key: key not in _KEYWORDS)
_ENV_NAME = _PLAIN_ENV_NAME | st.sampled_from(_KEYWORDS)
_GLOB = st.sampled_from(["src/*.py", "db/schema.sql", "**/*.md", "out/", "a b.txt", "*.[ch]"])
_CENTS = st.integers(0, 10**6).map(lambda cents: cents / 100)
_ANY_AMOUNT = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)


def _optional(draw: DrawFn, into: dict[str, Any], key: str,
              strategy: st.SearchStrategy[Any]) -> None:
    if draw(st.booleans()):
        into[key] = draw(strategy)


@st.composite
def budgets(draw: DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _optional(draw, out, "usd", _CENTS)
    _optional(draw, out, "time", st.sampled_from(["30s", "10m", "1h30m"]) | st.integers(0, 10**7))
    _optional(draw, out, "memory", st.sampled_from(["512MiB", "2GiB"]) | st.integers(0, 2**44))
    _optional(draw, out, "tokens", st.integers(0, 10**10))
    if not out and avoid("empty-table"):
        out["usd"] = draw(_CENTS)
    return out


@st.composite
def throttles(draw: DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _optional(draw, out, "memory", st.sampled_from(["85%", "50%", "100%", "0%"])
              | st.integers(0, 100))
    loads = st.integers(0, 6400).map(lambda n: n / 100) if avoid("float-load") else _ANY_AMOUNT
    _optional(draw, out, "load", loads)
    _optional(draw, out, "free", st.sampled_from(["1GiB", "512MiB"]) | st.integers(0, 2**40))
    if not out and avoid("empty-table"):
        out["memory"] = "85%"
    return out


@st.composite
def daily_budgets(draw: DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"usd": draw(_CENTS)}
    _optional(draw, out, "alert", st.sampled_from(["80%", "50%", "100%"]))
    return out


@st.composite
def env_maps(draw: DrawFn, variables: list[str]) -> dict[str, str]:
    keys = _ENV_NAME.filter(lambda key: key != "foreach") if avoid("keyword-env") else _ENV_NAME
    return draw(st.dictionaries(keys, texts(variables), min_size=1 if avoid("empty-env") else 0,
                                max_size=3))


@st.composite
def agents(draw: DrawFn, variables: list[str]) -> dict[str, Any]:
    provider = draw(st.sampled_from(["claude", "codex", "gemini", "aider", "command"]))
    out: dict[str, Any] = {"provider": provider}
    if provider == "command":
        out["command"] = "bot " + draw(texts(variables, ("{prompt_file}", "{target}")))
    _optional(draw, out, "description", texts(variables))
    _optional(draw, out, "model", texts(variables))
    _optional(draw, out, "args", st.lists(texts(variables), max_size=3))
    _optional(draw, out, "max_parallel", st.integers(1, 16))
    prices = _CENTS if avoid("float-price") else _ANY_AMOUNT
    _optional(draw, out, "price", st.fixed_dictionaries({"input": prices, "output": prices}))
    _optional(draw, out, "env", env_maps(variables))
    return out


@st.composite
def targets(draw: DrawFn, *, earlier: list[str], agent_names: list[str],
            variables: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with_deps: bool = draw(st.booleans())
    if earlier and with_deps:
        out["deps"] = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3,
                                    unique=True))
    kind = draw(st.sampled_from(["prompt", "run", "group"]))
    runtime = ("{target}", "{prompt_file}", "{workspace}", "{run_id}")
    _optional(draw, out, "description", texts(variables))
    if kind == "prompt":
        out["prompt"] = draw(texts(variables, runtime))
        _optional(draw, out, "agent",
                  st.sampled_from([*agent_names, "claude", "codex", "gemini", "aider"]))
    elif kind == "run":
        out["run"] = draw(texts(variables, runtime))
    if kind != "group":
        _optional(draw, out, "verify", texts(variables, runtime))
        _optional(draw, out, "isolation", st.sampled_from(["worktree", "branch", "none"])
                  | st.just({"dir": "."}))
        _optional(draw, out, "budget", budgets())
        _optional(draw, out, "terminal", st.sampled_from(["tmux", "headless"]))
    _optional(draw, out, "retries", st.integers(0, 3))
    _optional(draw, out, "priority", st.integers(-5, 5))
    _optional(draw, out, "always", st.booleans())
    _optional(draw, out, "exclusive", st.booleans())
    lock = _names(r"[a-z][a-z0-9_-]{0,6}")
    _optional(draw, out, "locks", st.lists(lock, max_size=3) | lock)  # a list, or one name
    _optional(draw, out, "env", env_maps(variables))
    _optional(draw, out, "inputs", st.lists(_GLOB, max_size=3))
    _optional(draw, out, "outputs", st.lists(_GLOB, max_size=3))
    _optional(draw, out, "copy", st.lists(st.sampled_from([".env", "secrets.json"]), max_size=2))
    _optional(draw, out, "merge", st.sampled_from(["auto", "manual", "none"]))
    # Attributes in any order, as a user might write them.
    keys = draw(st.permutations(list(out)))
    return {key: out[key] for key in keys}


@st.composite
def documents(draw: DrawFn) -> dict[str, Any]:
    """A valid data-form document (as `agentfile convert` reads and writes it)."""
    doc: dict[str, Any] = {}
    variables: list[str] = []
    values: dict[str, str] = {}
    for name in draw(st.lists(_VAR_NAME, max_size=3, unique=True)):
        values[name] = draw(texts(variables))  # references to earlier variables only
        variables.append(name)
    if values:
        doc["vars"] = values

    agent_table: dict[str, Any] = {}
    for name in draw(st.lists(_AGENT_NAME, max_size=3, unique=True)):
        agent_table[name] = draw(agents(variables))

    target_table: dict[str, Any] = {}
    names = draw(st.lists(_TARGET_NAME, min_size=1, max_size=5, unique=True))
    # `options` and `include` begin statements in the language: reserved, in every form.
    names = [n for n in names if n not in ("options", "include")] or ["x"]
    for index, name in enumerate(names):
        target_table[name] = draw(targets(earlier=names[:index], agent_names=list(agent_table),
                                          variables=variables))

    options: dict[str, Any] = {}
    _optional(draw, options, "jobs", st.integers(1, 64))
    _optional(draw, options, "default", st.lists(st.sampled_from(names), max_size=2,
                                                 unique=True) | st.sampled_from(names))
    _optional(draw, options, "agent", st.sampled_from([*agent_table, "claude"]))
    _optional(draw, options, "isolation", st.sampled_from(["worktree", "branch", "none"]))
    _optional(draw, options, "terminal", st.sampled_from(["tmux", "headless"]))
    _optional(draw, options, "budget", budgets())
    _optional(draw, options, "daily_budget", daily_budgets())
    _optional(draw, options, "throttle", throttles())
    _optional(draw, options, "merge", st.sampled_from(["auto", "manual", "none"]))
    if options:
        doc["options"] = options
    if agent_table:
        doc["agents"] = agent_table
    doc["targets"] = target_table
    # Top-level sections in any order.
    keys = draw(st.permutations(list(doc)))
    return {key: doc[key] for key in keys}


# -- 1. the three forms of one document give one model -----------------------------------------


def _models(doc: dict[str, Any]) -> dict[str, Manifest]:
    return {name: load_ok(name, render(doc)).manifest for name, render in FORMS.items()}


@PROPERTY
@given(documents())
def test_three_forms_give_one_model(doc: dict[str, Any]) -> None:
    models = _models(doc)
    assert models["Agentfile"] == models["Agentfile.yaml"], to_agentfile(doc)
    assert models["Agentfile.json"] == models["Agentfile.yaml"]


# -- 2. convert: Agentfile -> YAML -> Agentfile gives back the original ------------------------


_ORDER = {
    "": ("include", "vars", "options", "agents", "targets"),
    "budget": ("usd", "time", "memory", "tokens"),
    "throttle": ("memory", "load", "free"),
    "daily_budget": ("usd", "alert"),
    "price": ("input", "output"),
}


def _canonical(doc: Any, path: tuple[str, ...] = ()) -> Any:
    """The document as the Agentfile language spells it: quantities written as text, money as
    floats, empty sections dropped, sections in the language's order (what `to_agentfile`
    then `read_document` should give)."""
    if isinstance(doc, dict):
        out = {}
        for key, value in doc.items():
            here = (*path, key)
            if value == {} and key in ("budget", "throttle", "env"):
                continue  # an empty table is written as nothing
            value = _canonical(value, here)
            empty_section = not value and (len(here) == 1 or here[0::2] == ("targets", "deps"))
            if empty_section and key in ("deps", "vars", "agents", "options"):
                continue
            out[key] = value
        # The language has a fixed order: sections as below, a target's deps in its header,
        # the items of a typed value (`budget = $1, 10m`) by kind.
        if not path:
            order = _ORDER[""]
        elif len(path) == 2 and path[0] == "targets":
            order = ("deps",)
        else:
            order = _ORDER.get(str(path[-1]), ())
        first = [key for key in order if key in out]
        return {key: out[key] for key in [*first, *(k for k in out if k not in first)]}
    if isinstance(doc, list):
        return [_canonical(value, path) for value in doc]
    return _quantity(path[-2:], doc) if len(path) >= 2 else doc


def _quantity(where: tuple[str, ...], value: Any) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return value
    if where == ("budget", "time"):
        return q.format_duration(value)
    if where in (("budget", "memory"), ("throttle", "free")):
        return q.format_size(int(value))
    if where in (("throttle", "memory"), ("daily_budget", "alert")):
        return f"{q.format_number(value)}%"
    if where[-1] in ("usd", "input", "output", "load") and where[0] != "env":
        return float(value)
    return value


@PROPERTY
@given(documents())
def test_convert_gives_back_the_document(doc: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        original = Path(folder) / "Agentfile"
        original.write_text(to_agentfile(doc), encoding="utf-8")
        # The document read back is the original, spelt as the language spells quantities.
        source = read_document(original)
        assert not source.problems, source.problems
        assert source.doc == _canonical(doc)
        # `agentfile convert Agentfile --to yaml` writes what the original renders to ...
        converted = Path(folder) / "Agentfile.yaml"
        assert convert(source=str(original), to="yaml", output=str(converted)) == 0
        assert converted.read_text(encoding="utf-8") == to_yaml(_canonical(doc), SCHEMA_COPY)
        # ... which loads to the original's model, and converts back to the same Agentfile.
        assert load(converted, environ={}).manifest == load(original, environ={}).manifest
        back = Path(folder) / "back.agentfile"
        assert convert(source=str(converted), to="agentfile", output=str(back)) == 0
        assert back.read_text(encoding="utf-8") == original.read_text(encoding="utf-8")


# -- 3. no input makes load() fail with anything but a ManifestError -----------------------------


@pytest.mark.parametrize("name", list(FORMS))
@PROPERTY
@given(text=st.text())
def test_any_text_loads_or_is_reported(name: str, text: str) -> None:
    assert_well_reported(load_text(name, text))


@pytest.mark.parametrize("name", list(FORMS))
@PROPERTY
@given(data=st.binary())
def test_any_bytes_load_or_are_reported(name: str, data: bytes) -> None:
    assert_well_reported(load_text(name, data))


_NOISE = ':={}[]()"\\ \n\t#$'
_YAML_NOISE = "&*!|>-?%@'`,"


@st.composite
def mutated(draw: DrawFn, name: str) -> str:
    """A valid manifest rendered as `name`, with a few characters or lines broken."""
    text = FORMS[name](draw(documents()))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["delete", "insert", "duplicate", "digits"]))
        index = draw(st.integers(0, len(text)))
        if action == "delete" and text:
            index = min(index, len(text) - 1)
            text = text[:index] + text[index + 1:]
        elif action == "insert":
            noise = _NOISE + (_YAML_NOISE if name != "Agentfile" else "")
            text = text[:index] + draw(st.sampled_from(noise)) + text[index:]
        elif action == "duplicate":
            lines = text.split("\n")
            at = min(index, len(lines) - 1)
            lines.insert(at, lines[at])
            text = "\n".join(lines)
        elif action == "digits":
            # A key held down in a number: a number longer than anyone means.
            numbers = [at for at, char in enumerate(text) if char.isdigit()]
            if numbers:
                index = numbers[index % len(numbers)]
            digits = draw(st.integers(1, 15 if avoid("huge-number") else 5000))
            text = text[:index] + "9" * digits + text[index:]
    if name == "Agentfile.yaml" and avoid("yaml-escape"):
        assume("\\U" not in text and "\\u" not in text)
    return text


@pytest.mark.parametrize("name", list(FORMS))
@PROPERTY
@given(data=st.data())
def test_broken_manifests_are_reported(name: str, data: st.DataObject) -> None:
    assert_well_reported(load_text(name, data.draw(mutated(name), label="text")))


_YAML_PIECES = ("targets", "a", "run", "x", ":", ": ", " ", "  ", "\n", "- ", "[", "]", "{",
                "}", ", ", "'", '"', "#", "? ", "<<: ", "|\n", "1", "~", "!!str ", "!!int ",
                "!!float ", "2001-02-03", "2001-02-30", "&x ", "*x", "[*x]", "{a: *x}")
_YAML_TRAPS = {"yaml-alias-cycle": ("&x ",), "yaml-constructor": ("!!int ", "!!float ",
                                                                  "2001-02-30")}


@PROPERTY
@given(st.lists(st.sampled_from([piece for piece in _YAML_PIECES if not any(
    avoid(bug) and piece in traps for bug, traps in _YAML_TRAPS.items())]),
    max_size=30).map("".join))
def test_yaml_soup_is_reported(text: str) -> None:
    assert_well_reported(load_text("Agentfile.yaml", text))


def _nested(name: str, depth: int) -> str:
    value = "[" * depth + "]" * depth
    if name == "Agentfile":
        return f"a:\n    run = \"true\"\n    locks = {value}\n"
    if name == "Agentfile.yaml":
        return f"targets:\n  a:\n    run: 'true'\n    locks: {value}\n"
    return f'{{"targets": {{"a": {{"run": "true", "locks": {value}}}}}}}'


@pytest.mark.parametrize("name", list(FORMS))
@settings(PROPERTY, max_examples=25)
@given(depth=st.integers(1, 100 if avoid("deep-nesting") else 3000))
def test_nested_values_are_reported(name: str, depth: int) -> None:
    assert_well_reported(load_text(name, _nested(name, depth)))


# -- the bugs found, as their minimal inputs -----------------------------------------------------


def known_bug(reason: str, *,
              raises: type[BaseException] | tuple[type[BaseException], ...] = AssertionError,
              ) -> pytest.MarkDecorator:
    """A bug found by a property above, kept visible until it is fixed (then XPASS fails)."""
    return pytest.mark.xfail(strict=True, raises=raises, reason=reason)


def assert_one_model(doc: dict[str, Any]) -> None:
    models = _models(doc)
    assert models["Agentfile"] == models["Agentfile.yaml"] == models["Agentfile.json"]


def assert_no_crash(name: str, text: str) -> None:
    assert_well_reported(load_text(name, text))


@pytest.mark.parametrize("doc", [
    {"targets": {"a": {"run": "", "budget": {}}}},
    {"options": {"throttle": {}}, "targets": {"a": {}}},
], ids=["budget", "throttle"])
def test_bug_empty_typed_table(doc: dict[str, Any]) -> None:
    assert_one_model(doc)


@pytest.mark.parametrize("doc", [
    {"targets": {"a": {"env": {}}}},
    {"agents": {"b": {"provider": "claude", "env": {}}}, "targets": {"a": {}}},
], ids=["target", "agent"])
def test_bug_empty_env(doc: dict[str, Any]) -> None:
    assert_one_model(doc)


@pytest.mark.parametrize("name", ["options", "include"])
@pytest.mark.parametrize("form", list(FORMS))
def test_reserved_target_names_are_refused(name: str, form: str) -> None:
    doc: dict[str, Any] | None = {"targets": {name: {}}} if form != "Agentfile" else None
    text = FORMS[form](doc) if doc else f"{name}x:\n"
    if form == "Agentfile":
        return  # the language cannot even write such a target: `options:` is the options block
    outcome = load_text(form, text)
    assert isinstance(outcome, ManifestError)
    assert any("cannot name a target" in p.message for p in outcome.problems)


def test_bug_foreach_env_name() -> None:
    assert_one_model({"targets": {"a": {"env": {"A": "", "foreach": ""}}}})


@pytest.mark.parametrize("load_value", [1e-05, 1e16])
def test_bug_throttle_load_exponent(load_value: float) -> None:
    assert_one_model({"options": {"throttle": {"load": load_value}}, "targets": {"a": {}}})


@pytest.mark.parametrize("doc", [
    {"agents": {"b": {"provider": "claude", "price": {"input": 0.0, "output": 1e-13}}},
     "targets": {"a": {}}},
    {"targets": {"a": {"run": "", "budget": {"usd": 1 / 3}}}},
], ids=["dollar-dot", "precision"])
def test_bug_money_precision(doc: dict[str, Any]) -> None:
    assert_one_model(doc)


@pytest.mark.parametrize(("name", "text"), [
    ("Agentfile", 'a:\n    run = ""\n    budget = 1' + "0" * 297 + "TiB\n"),
    ("Agentfile", 'a:\n    run = ""\n    budget = 1' + "0" * 309 + " tokens\n"),
    ("Agentfile", "options:\n    throttle = free 1" + "0" * 297 + "TiB\na:\n"),
    ("Agentfile.json",
     '{"targets": {"a": {"run": "", "budget": {"memory": "1' + "0" * 297 + 'TiB"}}}}'),
], ids=["size", "tokens", "free", "json-size"])
def test_bug_huge_quantity(name: str, text: str) -> None:
    assert_no_crash(name, text)


@pytest.mark.parametrize(("name", "text"), [
    ("Agentfile", "a:\n    priority = 1" + "0" * 4300 + "\n"),
    ("Agentfile.json", '{"targets": {"a": {"priority": 1' + "0" * 4300 + "}}}"),
    ("Agentfile.yaml", "targets:\n  a:\n    priority: 1" + "0" * 4300 + "\n"),
], ids=["agentfile", "json", "yaml"])
def test_bug_huge_integer(name: str, text: str) -> None:
    assert_no_crash(name, text)


@pytest.mark.parametrize("text", ['a: "\\U00110000"\n', 'a: "\\UFFFFFFFF"\n'],
                         ids=["beyond-unicode", "beyond-c-int"])
def test_bug_yaml_bad_escape_without_libyaml(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataform, "_Loader", yaml.SafeLoader)
    assert_no_crash("Agentfile.yaml", text)


@pytest.mark.parametrize("text", ["!!int\n", "a: 2001-02-30\n"], ids=["empty-int", "date"])
def test_bug_yaml_constructor(text: str) -> None:
    assert_no_crash("Agentfile.yaml", text)


def test_bug_yaml_recursive_alias() -> None:
    assert_no_crash("Agentfile.yaml", "&x [*x]\n")


@pytest.mark.parametrize("name", list(FORMS))
def test_bug_deep_nesting(name: str) -> None:
    assert_no_crash(name, _nested(name, 1000))


def test_bug_problem_after_last_line() -> None:
    text = "a:\n    env:\n"
    outcome = load_text("Agentfile", text)
    assert isinstance(outcome, ManifestError)
    assert all(p.span.line <= len(text.splitlines()) for p in outcome.problems), outcome.render()


@settings(max_examples=60, deadline=None)
@given(value=st.text(alphabet=st.sampled_from(list("ab $`'\"\\(){};|&*?~\n")), max_size=12),
       context=st.sampled_from(["{v}", '"{v}"', "'{v}'", 'x"{v}"y', "x'{v}'y",
                                '"$(printf %s {v})"']))
def test_a_placeholder_reaches_the_shell_as_one_literal_word(value: str, context: str) -> None:
    import subprocess

    from agentfile.manifest.expand import substitute_shell

    text, carried = substitute_shell(context, {"v": value})
    done = subprocess.run(["/bin/sh", "-c", "printf %s " + text], capture_output=True,
                          timeout=10, env={**os.environ, **carried})
    before, after = (part.replace('"', "").replace("'", "") for part in context.split("{v}"))
    # $( ) drops the trailing newlines of what it runs, as the shell always does.
    expected = value.rstrip("\n") if context.startswith('"$(') else before + value + after
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == expected


@PROPERTY
@given(lines=st.lists(st.text(alphabet="ab ", min_size=1, max_size=6).filter(str.strip),
                      min_size=1, max_size=4),
       indent=st.integers(min_value=0, max_value=3))
def test_a_many_line_string_converts_to_an_agentfile_and_back(lines: list[str],
                                                               indent: int) -> None:
    """Lines that all begin with spaces keep them through `convert --to agentfile` (a block
    would lose what they share to the dedent)."""
    prompt = "".join(" " * indent + line + "\n" for line in lines)
    doc = {"agents": {"x": {"provider": "command", "command": "true"}},
           "targets": {"t": {"agent": "x", "prompt": prompt}}}
    loaded = load_ok("Agentfile", to_agentfile(doc))
    assert loaded.manifest.targets["t"].prompt == prompt


@settings(max_examples=40, deadline=None)
@given(value=st.text(alphabet=st.sampled_from(list("ab $`'\"\\();#\n")), max_size=10),
       template=st.sampled_from([
           "# don't worry\nprintf %s {v}", '# say "hi\nprintf %s {v}', "x=1 # a 'note\necho {v}",
           "cat <<EOF\nDon't {v}\nEOF\necho {v}", "cat <<'EOF'\n{v}\nEOF", '"${X:-{v}}"',
           "echo \"$(case x in x) echo {v};; esac)\"", "echo `echo {v}`", "echo '{v}\" {v}",
           "echo \"{v}' {v}"]))
def test_a_value_never_runs_as_code_whatever_the_template(value: str, template: str) -> None:
    """However the template quotes, comments or here-documents around a placeholder (and
    however that is misread), the value is never parsed by the shell."""
    import subprocess

    from agentfile.manifest.expand import substitute_shell

    with tempfile.TemporaryDirectory() as folder:
        marker = Path(folder) / "PWNED"
        text, carried = substitute_shell(template, {"v": value + f"$(touch {marker})"})
        subprocess.run(["/bin/sh", "-c", text], capture_output=True, timeout=10, cwd=folder,
                       env={**os.environ, **carried})
        assert not marker.exists(), (template, value, text)
