"""The fast paths of the loader against the slow ones they stand in for.

1. The hand-written Agentfile reader (manifest/fastparse.py) against lark's LALR parser.

The contract: whenever the fast path returns a Document, lark parses the same text without a
problem and returns an equal Document, spans included. When it is not sure it returns None
(and lark reads the text). Checked on the examples, the golden bad manifests, generated valid
manifests, broken ones, and a soup of the language's own fragments; and the fast path must
actually take every valid manifest that `render` writes, or it would be no fast path.

2. The one-walk YAML builder (dataform._Builder) against PyYAML's own constructor: the same
data, spans and problems, on rendered manifests and on YAML soup.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from test_properties import _YAML_PIECES, FORMS, PROPERTY, documents, mutated

from agentfile.errors import Problem
from agentfile.manifest import dataform, fastparse, syntax
from agentfile.manifest.lower import SpanTable
from agentfile.manifest.parse import parse
from agentfile.manifest.render import to_agentfile

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*/Agentfile"))
BAD = sorted((ROOT / "tests" / "data" / "bad").glob("*.agentfile"))


def same_as_lark(text: str) -> syntax.Document | None:
    """The fast path's answer, after checking it against lark's."""
    fast = fastparse.parse(text, "Agentfile")
    if fast is not None:
        document, problems = parse(text, "Agentfile")
        assert problems == [], f"the fast path took text lark refuses:\n{text}"
        assert fast == document, f"the fast path read this differently:\n{text}"
    return fast


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_examples_take_the_fast_path(path: Path) -> None:
    assert same_as_lark(path.read_text(encoding="utf-8")) is not None


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_manifests_agree_with_lark(path: Path) -> None:
    same_as_lark(path.read_bytes().decode("utf-8", errors="replace"))


@PROPERTY
@given(documents())
def test_rendered_manifests_take_the_fast_path(doc: dict[str, object]) -> None:
    assert same_as_lark(to_agentfile(doc)) is not None


@PROPERTY
@given(data=st.data())
def test_broken_manifests_agree_with_lark(data: st.DataObject) -> None:
    same_as_lark(data.draw(mutated("Agentfile"), label="text"))


# Pieces of the language, to be strung together at random: most strings are wrong, in every
# way the reader has to notice (indents, dedents, brackets across lines, keywords in odd places).
_FRAGMENTS = (
    "a", "b-c", "x/y.z", "{f}", "agent", "options", "env", "include", "foreach", "in", "true",
    ":", " ", "  ", "=", " = ", ",", ", ", "[", "]", "{", "}", "(", ")", "glob", "lines",
    '"s"', "'q'", '""', '"\\n"', '"\\u00e9"', '"\\q"', '"a\\"b"', '"""\n  t\n    u\n  """',
    '"""x"""', "#c", " # c", "1", "-2", "1.5", "1.5.3", "10m", "1h30m", "2GiB", "85%", "200k",
    "$1", "$1.50", "$3/Mtok", "${V}", "${}", "\n", "\n\n", "\n    ", "\n        ", "\n  ",
    "\n      ", "\t", "\r\n", "é", "\\",
)


@PROPERTY
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join))
def test_fragment_soup_agrees_with_lark(text: str) -> None:
    same_as_lark(text)


_LINES = (
    "t:", "t: a b", "u: t", "agent w: claude", "options:", "V = 1", 'include "other"',
    '    run = "x"', "    budget = $1, 10m, 1GiB", "    locks = [a, 'b',]", "    env:",
    '        K = "v"', '        foreach = "v"', "    foreach f in glob(\"*.py\")",
    "    foreach f in [1, 2]", "    retries = 2  # again", "    throttle = memory 85%, load 2.0",
    "    price = $3/Mtok in, $15/Mtok out", "    args = [", '        "--x",', "    ]",
    "    map = {a = 1, 'b c' = [2]}", '    prompt = """', "        Do it.", '        """',
    "    # a comment", "", "  x = 1", "      y = 2", "    z = 3,", "    w = a b",
)


@PROPERTY
@given(st.lists(st.sampled_from(_LINES), max_size=25).map("\n".join))
def test_line_soup_agrees_with_lark(text: str) -> None:
    same_as_lark(text)


# -- valid syntax in all its variety: every one of these must take the fast path ---------------

_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,6}", fullmatch=True).filter(
    lambda name: name != "foreach")
_WORDS = st.from_regex(r"[A-Za-z0-9_./{}-]{1,8}", fullmatch=True).filter(
    lambda word: word != "include")
_SPACE = st.sampled_from(["", " ", "  "])
_GAP = st.sampled_from([" ", "\n", "\n  ", "  # note\n      ", "\n\n        "])
_COMMENT = st.sampled_from(["", "  # why", " #", "# x = [1"])


def _string_body(other_quote: str) -> st.SearchStrategy[str]:
    """What may stand between quotes: text, escapes, the other kind of quote."""
    return st.lists(
        st.characters(blacklist_categories=("Cs", "Cc", "Cf"), blacklist_characters="\\\"'")
        | st.sampled_from(["\\n", "\\\"", "\\'", "\\\\", "\\u00e9", "{x}", "${V}", "#",
                           other_quote]),
        max_size=12).map("".join)


_DOUBLE_QUOTED = _string_body("'").map(lambda body: f'"{body}"')
_SINGLE_QUOTED = _string_body('"').map(lambda body: f"'{body}'")


@st.composite
def _long_strings(draw: st.DrawFn) -> str:
    indent = " " * draw(st.integers(0, 8))
    lines = draw(st.lists(_string_body("'"), max_size=4))
    return '"""\n' + "".join(f"{indent}{line}\n" for line in lines) + indent + '"""'


def _atoms(depth: int) -> st.SearchStrategy[str]:
    simple = st.one_of(
        _DOUBLE_QUOTED,
        _SINGLE_QUOTED,
        _long_strings(),
        st.integers(-10**6, 10**6).map(str),
        st.sampled_from(["1.5", "0.25", "30s", "1h30m", "2GiB", "85%", "200k", "1.5M"]),
        st.sampled_from(["$1", "$1.50", "$3/Mtok"]),
        st.sampled_from(["${V}", "${A_1}"]),
        _NAMES,
    )
    if depth == 0:
        return simple

    def joined(open_: str, close: str,
               parts: st.SearchStrategy[list[str]]) -> st.SearchStrategy[str]:
        return st.tuples(parts, _GAP, _GAP, st.booleans()).map(
            lambda t: open_ + t[1] + ("," + t[2]).join(t[0]) + ("," if t[3] and t[0] else "")
            + t[2] + close)

    inner = _atoms(depth - 1)
    entries = st.tuples(_NAMES | _DOUBLE_QUOTED | _SINGLE_QUOTED,
                        _SPACE, inner).map(lambda e: f"{e[0]}{e[1]}={e[1]}{e[2]}")
    return st.one_of(
        simple,
        joined("[", "]", st.lists(inner, max_size=3)),
        joined("{", "}", st.lists(entries, max_size=3)),
        st.tuples(_NAMES, _SPACE, joined("(", ")", st.lists(inner, max_size=2))).map("".join),
    )


_VALUES = st.lists(st.lists(_atoms(2), min_size=1, max_size=3).map(" ".join), min_size=1,
                   max_size=3).map(", ".join)


@st.composite
def _attribute(draw: st.DrawFn, indent: str) -> str:
    space = draw(_SPACE)
    return (f"{indent}{draw(_NAMES)}{space}={draw(_SPACE)}{draw(_VALUES)}{draw(_COMMENT)}\n"
            + draw(st.sampled_from(["", "\n", "   # aside\n", "# at the margin\n"])))


@st.composite
def _block(draw: st.DrawFn) -> str:
    head = draw(st.sampled_from(["{w}", "agent {w}", "options"])).format(w=draw(_WORDS))
    deps = " ".join(draw(st.lists(_WORDS, max_size=3)))
    text = f"{head}{draw(_SPACE)}:{draw(_SPACE)}{deps}{draw(_COMMENT)}\n"
    indent = " " * draw(st.integers(1, 6))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["attribute", "attribute", "section", "foreach"]))
        if kind == "attribute":
            text += draw(_attribute(indent))
        elif kind == "section":
            deeper = indent + " " * draw(st.integers(1, 4))
            text += f"{indent}{draw(_NAMES)}{draw(_SPACE)}:{draw(_COMMENT)}\n"
            text += "".join(draw(st.lists(_attribute(deeper), min_size=1, max_size=3)))
        else:
            text += f"{indent}foreach {draw(_NAMES)} in {draw(_VALUES)}{draw(_COMMENT)}\n"
    return text


_MANIFESTS = st.lists(
    st.one_of(_block(), st.tuples(_WORDS, _SPACE, _VALUES).map(
        lambda v: f"{v[0]}{v[1]}={v[1]}{v[2]}\n"), st.just('include "other.agentfile"\n'),
        st.just("# a comment\n\n")),
    max_size=6).map("".join)


@PROPERTY
@given(_MANIFESTS)
def test_valid_syntax_takes_the_fast_path(text: str) -> None:
    assert same_as_lark(text) is not None, text


def test_what_the_fast_path_leaves_to_lark() -> None:
    for text in ("a:\n\trun = \"x\"\n", "a:\r\n    run = \"x\"\r\n", "a: b\n    x = 1\n  y = 2\n",
                 "include: x\n", "a:\n    foreach = 1\n", "a:\n    run = \"\x01\"\n"):
        assert fastparse.parse(text, "Agentfile") is None, text


# -- 2. YAML: one walk against PyYAML's constructor --------------------------------------------


def _constructed_by_pyyaml(text: str) -> object:
    """What load_yaml gave before it built values itself: PyYAML's constructor's output."""
    loader = dataform._Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return (None, {}, [])
        spans: SpanTable = {(): dataform._span("Agentfile.yaml", node)}
        problems: list[Problem] = []
        dataform._walk("Agentfile.yaml", node, (), spans, problems, dataform._Count(text))
        return (dataform._string_keys(loader.construct_document(node)), spans, problems)
    finally:
        loader.dispose()


def _same_as_pyyaml(text: str) -> None:
    try:
        expected = _constructed_by_pyyaml(text)
    except (yaml.YAMLError, ValueError, TypeError, IndexError, OverflowError):
        return  # load_yaml reports these the same way on either path
    assert dataform.load_yaml(text, "Agentfile.yaml") == expected, text


@PROPERTY
@given(documents())
def test_yaml_builder_matches_pyyaml_on_manifests(doc: dict[str, object]) -> None:
    _same_as_pyyaml(FORMS["Agentfile.yaml"](doc))


@PROPERTY
@given(st.lists(st.sampled_from(_YAML_PIECES), max_size=30).map("".join))
def test_yaml_builder_matches_pyyaml_on_soup(text: str) -> None:
    _same_as_pyyaml(text)


def test_a_valid_agentfile_loads_neither_lark_nor_pyyaml(tmp_path: Path) -> None:
    """Start-up: a well-formed Agentfile needs neither parser library (only a mistake in it
    loads lark, only a YAML or JSON manifest PyYAML)."""
    (tmp_path / "Agentfile").write_text('a:\n    run = "true"\nb: a\n    run = "true"\n')
    probe = ("import sys\n"
             "from agentfile.manifest.load import load\n"
             "load(__import__('pathlib').Path(sys.argv[1]))\n"
             "print(sorted(m for m in ('lark', 'yaml') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "Agentfile")],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_a_header_that_ends_badly_is_read_in_linear_time() -> None:
    """A target header whose line does not end well (`a: bbbb…!`) once made the header's
    regular expression backtrack exponentially: 40 characters would have taken days. Run in
    a child process so that a return of the bug fails this test instead of hanging the run."""
    probe = ("from agentfile.manifest import fastparse\n"
             "text = 'a: ' + 'b' * 5000 + '!\\n    run = \"x\"\\n'\n"
             "deps = 'a: ' + ' '.join(['dep'] * 5000) + ' !\\n'\n"
             "print(fastparse.parse(text, 'Agentfile'), fastparse.parse(deps, 'Agentfile'))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split() == ["None", "None"]  # lark says what is wrong
    _, problems = parse("a: " + "b" * 40 + "!\n", "Agentfile")
    assert problems[0].message == "unexpected character '!'"
