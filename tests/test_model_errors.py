"""Bad YAML gets every error at once, each with file:line, what is wrong and what would be valid.

Each case in tests/fixtures/bad_yaml/<case>/ is a small project (metrics/*.yml) with one kind of
mistake (or, for several_errors_two_files, many) and an expected.txt next to it listing
`<file under metrics/>:<line>: <text the message must contain>`. The match is both ways: every
expected line matches a reported error, and every reported error is expected, so a mistake
that also produces follow-on errors elsewhere fails the test.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from metrics_layer.model import ValidationFailed, load_model

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bad_yaml"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "expected.txt").is_file())
DEMO_FILES = sorted((REPO / "metrics").glob("*.yml"))


@dataclass(frozen=True)
class Expected:
    file: str  # relative to the case's metrics/ folder
    line: int
    text: str

    def matches(self, case: str, error) -> bool:
        shown = error.location.file.replace(os.sep, "/")
        return (
            shown.endswith(f"{case}/metrics/{self.file}")
            and error.location.line == self.line
            and self.text in error.message
        )


def expected_errors(case: str) -> list[Expected]:
    result = []
    for raw in (FIXTURES / case / "expected.txt").read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        match = re.match(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<text>.+)$", raw)
        assert match, f"{case}/expected.txt: cannot read {raw!r}"
        result.append(Expected(match["file"], int(match["line"]), match["text"]))
    assert result, f"{case}/expected.txt lists no error"
    return result


def load_errors(case: str) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        load_model(FIXTURES / case / "metrics")
    return info.value


def test_there_are_enough_cases():
    assert len(CASES) >= 14, CASES


@pytest.mark.parametrize("case", CASES)
def test_case_reports_the_expected_errors(case):
    failure = load_errors(case)
    expected = expected_errors(case)
    report = "\n".join(str(e) for e in failure.errors)
    for want in expected:
        assert any(want.matches(case, e) for e in failure.errors), (
            f"{case}: no error at {want.file}:{want.line} containing {want.text!r}; got:\n{report}"
        )
    for error in failure.errors:
        assert any(want.matches(case, error) for want in expected), f"{case}: unexpected error {error}"
    # The readable report carries every error with its file:line.
    text = str(failure)
    assert text.startswith(f"{len(failure.errors)} error")
    for error in failure.errors:
        assert f"{error.location.file}:{error.location.line}: {error.message}" in text


def test_locations_are_shown_relative_to_the_working_folder(monkeypatch):
    monkeypatch.chdir(REPO)
    failure = load_errors("unknown_agg")
    [error] = failure.errors
    assert error.location.file == "tests/fixtures/bad_yaml/unknown_agg/metrics/models.yml".replace("/", os.sep)
    assert str(error).startswith("tests/fixtures/bad_yaml/unknown_agg/metrics/models.yml:6: ".replace("/", os.sep))


def test_several_errors_in_two_files_are_all_reported_at_once():
    failure = load_errors("several_errors_two_files")
    files = {Path(e.location.file).name for e in failure.errors}
    assert files == {"models.yml", "metrics.yml"}
    assert len(failure.errors) == len(expected_errors("several_errors_two_files")) == 7
    assert str(failure).startswith("7 errors in the semantic model:")
    # Sorted by file, then line.
    keys = [(e.location.file, e.location.line) for e in failure.errors]
    assert keys == sorted(keys)


def test_duplicate_metric_points_at_the_second_definition_and_names_the_first():
    [error] = load_errors("duplicate_metric_across_files").errors
    assert error.location.file.endswith("b_more_metrics.yml")
    assert error.location.line == 5
    assert re.search(r"first defined at \S*a_models\.yml:9\)", error.message)


# ---- any YAML at all: a ValidationFailed, never another exception -------------------------

def _mutate(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        kind = rng.choice(("delete", "duplicate", "word", "truncate", "indent", "swap", "char"))
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "word":
            words = lines[i].split(" ")
            words[rng.randrange(len(words))] = rng.choice(_WORDS)
            lines[i] = " ".join(words)
        elif kind == "truncate":
            lines = lines[:i] + [lines[i][: rng.randrange(len(lines[i]) + 1)]]
        elif kind == "indent":
            lines[i] = " " * rng.randint(1, 3) + lines[i]
        elif kind == "swap":
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            at = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:at] + rng.choice(_CHARS) + lines[i][at:]
        lines = lines or [""]
    return "\n".join(lines)


_WORDS = (
    "summ", "count", "sum", "time", "name:", "-", ":", "{", "}", "[", "]", "'", '"', "3 hourz", "primary",
    "foreign", "", "null", "1", "&a", "*a", "!!int", "!tag", "window:", "dedupe:", "table:", "sql:", "SELECT",
    "(", ")", "=", "predictions", "leads.lead_cnt", "transactions.created_at", "true", "0.5", "~", "|", ">",
)
_CHARS = tuple(":{}[]-'\"#&*!|>%@`,? \t\\") + ("\x07", "\u00e9")


@pytest.mark.parametrize("seed", range(200))
def test_mutated_demo_yaml_loads_or_fails_validation(tmp_path, seed):
    rng = random.Random(seed)
    line_counts = {}
    for path in DEMO_FILES:
        text = path.read_text(encoding="utf-8")
        if rng.random() < 0.8:
            text = _mutate(rng, text)
        (tmp_path / path.name).write_text(text, encoding="utf-8")
        line_counts[path.name] = text.count("\n") + 1
    try:
        load_model(tmp_path)
    except ValidationFailed as e:
        assert e.errors
        for error in e.errors:
            name = Path(error.location.file).name
            assert name in line_counts, error
            assert 1 <= error.location.line <= line_counts[name], error
            assert error.message.strip()
    # Anything else (KeyError, TypeError, RecursionError, a YAML or sqlglot exception) fails the test.


@pytest.mark.parametrize(
    "text",
    [
        "models: !foo bar\n",  # an unknown tag
        "models: !!python/object:os.system echo\n",  # an unsafe tag
        "models:\n  - {name: t, table: t, measures: [{name: n, agg: percentile, percentile: !!float x}]}\n",
        "models: !!int\n",
        "models:\n  - {name: t, table: t, dimensions: [{name: =}]}\n",  # plain '=' is YAML's 'value' tag
        "models: &a [*a]\n",  # a recursive alias
        "models: " + "[" * 2000 + "]" * 2000 + "\n",  # nesting deeper than the parser's stack
        "models:\n  - name: t\n    table: t\n    dimensions: [{name: d, expr: '" + "(" * 5000 + "1" + ")" * 5000 + "'}]\n",  # deeper than the parser recurses (pure or compiled sqlglot)
        "models:\n  - name: t\n    table: \"\x07\"\n",  # a control character
        "- just\n- a list\n",
        "plain text\n",
        "models: []\n---\nmetrics: []\n",  # two documents
        "models:\n  - {[a, b]: 1, name: t, table: t}\n",  # a key that is a list
        "models:\n  - {name: t, table: [a, b]}\n",
        "models:\n  - {name: t, table: t, dimensions: [{name: d, type: [time]}]}\n",
        "models:\n  - {name: t, table: t}\nviews:\n  - {name: v, metrics: [[x], {a: 1}], dimensions: [t.d]}\n",
        "metrics:\n  - {name: m, measure: {measure: [x]}}\n",
        "metrics:\n  - {name: m, expr: 2024-01-01}\n",
    ],
    ids=lambda text: repr(text[:40]),
)
def test_odd_yaml_is_a_validation_error(tmp_path, text):
    (tmp_path / "a.yml").write_text(text, encoding="utf-8")
    with pytest.raises(ValidationFailed) as info:
        load_model(tmp_path)
    assert all(Path(e.location.file).name == "a.yml" and e.location.line >= 1 for e in info.value.errors)


def test_a_file_that_is_not_utf8_names_the_line(tmp_path):
    (tmp_path / "a.yml").write_bytes(b"models:\n  - name: t\n    table: caf\xe9\n")
    [error] = pytest.raises(ValidationFailed, load_model, tmp_path).value.errors
    assert error.location.line == 3 and "not UTF-8" in error.message


def test_no_folder_and_empty_folder(tmp_path):
    with pytest.raises(ValidationFailed, match="no such folder"):
        load_model(tmp_path / "missing")
    with pytest.raises(ValidationFailed, match=r"no \.yml or \.yaml files"):
        load_model(tmp_path)


# ---- the CLI: exit 1, the report on stderr, no traceback ------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("metrics-layer")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "metrics_layer.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_LAYER_")}
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


@pytest.mark.parametrize("case", ["several_errors_two_files", "yaml_syntax", "not_utf8", "filter_fanout_join"])
def test_cli_validate_reports_file_and_line(case):
    result = _cli("validate", f"tests/fixtures/bad_yaml/{case}")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    for want in expected_errors(case):
        assert f"tests/fixtures/bad_yaml/{case}/metrics/{want.file}:{want.line}: " in result.stderr, result.stderr
        assert want.text in result.stderr


def test_cli_validate_demo_is_ok():
    result = _cli("validate", str(REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")
