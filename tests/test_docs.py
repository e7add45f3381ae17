"""The documentation against the command line: the README's quick start and many-series example run through the
installed command on tiny copies of the repository's data, and every `forecast` command that README.md and docs/*.md
show names a real command and only flags it accepts, so the docs cannot drift from the CLI."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from conftest import DATA, ETTH1, ROOT, head_csv, run_forecast

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Appended to every `forecast train` a docs test runs; a repeated flag's last value wins.
TINY_TRAIN = ["--epochs", "1", "--lookback", "8", "--horizon", "4", "--batch-size", "8"]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SEPARATORS = {"&&", "||", "|", ";"}


def marked_block(name: str) -> str:
    """The fenced block right after `<!-- docs-test: NAME -->` in the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = f"<!-- docs-test: {name} -->\n"
    assert text.count(marker) == 1, f"README.md needs exactly one {marker.strip()} before a fenced block"
    block = FENCE.match(text, text.index(marker) + len(marker))
    assert block, f"no fenced block right after {marker.strip()}"
    return block.group(1)


def forecast_commands(shell: str) -> list[list[str]]:
    """The `forecast ...` commands in shell text (`.venv/bin/forecast` too), as argument lists; continued lines are
    joined, comments dropped, and commands chained with && or | split apart."""
    commands = []
    for line in shell.replace("\\\n", " ").splitlines():
        if not re.search(r"(^|[\s/])forecast\s", line):
            continue
        command: list[str] = []
        for token in shlex.split(line, comments=True) + ["&&"]:
            if not command and re.fullmatch(r"[A-Z_]+=\S*", token):
                continue  # an environment variable set for the command
            if token not in SEPARATORS:
                command.append(token)
                continue
            if command and Path(command[0]).name == "forecast":
                commands.append(command)
            command = []
    return commands


def run_block(name: str, cwd: Path) -> list:
    """Runs the README block's forecast commands in `cwd`, word for word but with TINY_TRAIN after each train."""
    results = []
    for command in forecast_commands(marked_block(name)):
        args = command[1:] + (TINY_TRAIN if command[1] == "train" else [])
        results.append(run_forecast(*args, cwd=cwd))
    assert results, f"no forecast command in the {name} block"
    return results


@pytest.mark.slow
def test_quick_start_runs_on_tiny_data(tmp_path):
    (tmp_path / "data").mkdir()
    head_csv(ETTH1, 600, tmp_path / "data" / "ETTh1.csv")
    trained, predicted = run_block("quick-start", tmp_path)
    assert "saved" in trained.stderr
    assert predicted.stdout.startswith("date,step,OT,OT_q0.1,OT_q0.9\n")  # what the README says it writes


@pytest.mark.slow
def test_many_series_example_runs_on_tiny_data(tmp_path):
    (tmp_path / "data").mkdir()
    lines = (DATA / "camels_us_nh.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines[1:] if "2001-10-01" <= line.split(",")[1] <= "2002-12-31"]  # 457 days a basin
    (tmp_path / "data" / "camels_us_nh.csv").write_text(lines[0] + "".join(kept), encoding="utf-8")
    shutil.copy(DATA / "camels_us_nh_static.csv", tmp_path / "data")
    run_block("many-series", tmp_path)
    assert (tmp_path / "evaluation" / "camels_us_nh_series.csv").is_file()
    assert (tmp_path / "basin.png").is_file()


def cli_commands() -> dict[str, set[str]]:
    """Every command path (`train`, `models list`, ...) and the options it accepts, from the click command that
    --help prints."""
    from typer.main import get_command

    from forecast.cli import app

    found = {}

    def walk(command, path: tuple[str, ...]) -> None:
        options = {"--help"} | {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
        found[" ".join(path)] = options
        for name, sub in getattr(command, "commands", {}).items():  # a group's commands
            walk(sub, (*path, name))

    walk(get_command(app), ())
    return found


def shown_commands() -> list[tuple[str, list[str]]]:
    """(page, command) for every forecast command in a fenced block or an inline code span of the docs."""
    shown = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        blocks = FENCE.findall(text)
        spans = re.findall(r"`(forecast [^`]+)`", FENCE.sub("", text))
        for shell in [*blocks, *(span.replace("\n", " ") for span in spans)]:
            shown += [(page.relative_to(ROOT).as_posix(), command) for command in forecast_commands(shell)]
    return shown


def refused(shown: list[tuple[str, list[str]]]) -> list[str]:
    """What the CLI would refuse in the commands shown: a command that does not exist, or a flag it does not take."""
    accepted = cli_commands()
    wrong = []
    for page, command in shown:
        words = [word.strip("[]") for word in command[1:]]
        path = []
        while words and " ".join([*path, words[0]]) in accepted and not words[0].startswith("-"):
            path.append(words.pop(0))
        name = " ".join(path)
        if not path and words[:1] != ["--help"]:
            wrong.append(f"{page}: {' '.join(command)}: no such command")
            continue
        for word in words:
            flag = word.split("=")[0]
            if flag.startswith("--") and flag not in accepted[name]:
                wrong.append(f"{page}: {' '.join(command)}: forecast {name} has no {flag}")
    return wrong


def test_every_command_shown_is_accepted_by_the_cli():
    shown = shown_commands()
    assert len(shown) > 30, shown  # the README's tour and examples, and the guide's
    wrong = refused(shown)
    assert not wrong, "\n".join(wrong)


def test_a_wrong_command_or_flag_is_caught():
    shown = forecast_commands("forecast train x.csv --bogus 3 && forecast trian y\n"
                              "TF_CPP_MIN_LOG_LEVEL=0 forecast models list [--to 3] --model m")
    assert refused([("page", command) for command in shown]) == [
        "page: forecast train x.csv --bogus 3: forecast train has no --bogus",
        "page: forecast trian y: no such command",
        "page: forecast models list [--to 3] --model m: forecast models list has no --to",
    ]


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown page (code blocks left out)."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+\s+(.+?)\s*$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_relative_link_leads_to_a_page_and_heading():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
                broken.append(f"{page.name}: {target}: no such heading")
    assert not broken, "\n".join(broken)


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) < 200
