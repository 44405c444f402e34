"""The documentation's pages as a test reads them: their blocks, console sessions and tables.

    page = blocks(ROOT / "docs/tutorial/first-project.rst")
    [b.argument for b in page if b.directive == "code-block"]     # ["console", "console", ...]
    console(page[0].text)          # [("pip install ...", "...\\nSuccessfully installed ...")]
    matches("Hello ...\\n...\\nbye", "Hello you\\nmore\\nbye")   # True

In a page's expected output, a line that is only ``...`` stands for any number of lines, and
``...`` inside a line for any text on that line.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

DIRECTIVE = re.compile(r"^(\s*)\.\. ([\w-]+):: ?(.*)$")
OPTION = re.compile(r"^\s*:([\w-]+):\s*(.*)$")


@dataclass
class Block:
    """One directive of a page: ``.. code-block:: console`` is directive "code-block",
    argument "console"; ``text`` is its dedented content."""

    directive: str
    argument: str
    text: str
    line: int
    options: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.options.get("name", "")


def blocks(path: Path) -> list[Block]:
    """The directives of ``path`` that hold text, in the page's order (nested ones too)."""
    lines = Path(path).read_text().splitlines()
    found = []
    for i, line in enumerate(lines):
        match = DIRECTIVE.match(line)
        if not match:
            continue
        depth = len(match.group(1))
        options: dict[str, str] = {}
        j = i + 1
        while j < len(lines) and (option := OPTION.match(lines[j])):
            options[option.group(1)] = option.group(2)
            j += 1
        body = []
        for following in lines[j:]:
            if following.strip() and len(following) - len(following.lstrip()) <= depth:
                break
            body.append(following)
        text = textwrap.dedent("\n".join(body)).strip("\n")
        found.append(Block(match.group(2), match.group(3).strip(), text, i + 1, options))
    return found


def named(page: list[Block], name: str) -> Block:
    found = [b for b in page if b.name == name]
    assert len(found) == 1, f"the page has {len(found)} blocks named {name!r}"
    return found[0]


def console(text: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` of each ``$ command`` of a console block. Lines that
    start with ``> `` go on with the command above, as a shell shows them (after a ``\\``
    at the end of a line, or inside quotes)."""
    session: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            session.append((line[2:], []))
        elif line.startswith("> ") and session and not session[-1][1]:
            session[-1] = (session[-1][0] + "\n" + line[2:], [])
        elif session:
            session[-1][1].append(line)
    return [(command, "\n".join(output)) for command, output in session]


def table(text: str) -> list[list[str]]:
    """The rows of a ``list-table``'s content, each a list of cell texts."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("* - "):
            rows.append([stripped[4:]])
        elif stripped.startswith("- ") and rows:
            rows[-1].append(stripped[2:])
    return rows


def _pattern(expected: str) -> str:
    parts = []
    for line in expected.splitlines():
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            pieces = line.rstrip().split("...")
            parts.append(r"[^\n]*?".join(re.escape(p) for p in pieces) + r"[ \t]*\n")
    return "".join(parts)


def _normal(text: str) -> str:
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    return "\n".join(lines) + "\n" if lines else ""


def matches(expected: str, actual: str, *, prefix: bool = False) -> bool:
    """Whether ``actual`` is what ``expected`` shows (``...`` as in the module doc); with
    ``prefix``, what follows it in ``actual`` (a process still running) is ignored."""
    pattern = _pattern(_normal(expected))
    text = _normal(actual)
    if prefix:
        return re.match(pattern, text) is not None
    return re.fullmatch(pattern, text) is not None
