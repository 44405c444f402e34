"""Sphinx extension of these docs: the reference pages are generated from the code, so that
they cannot drift from it.

    .. drs-settings::            every DRS setting: conf.DEFAULTS with the comments above each key
    .. drs-states::              the job state machine: a diagram and a table, from TRANSITIONS
    .. drs-commands::            the management commands, from their argparse parsers
    .. drs-checks::              the system checks: id, level, message and hint, from checks.py
    .. drs-openapi::             the REST endpoints, from the OpenAPI schema the app generates
    .. drs-bench::               the latest benchmark table, from bench/README.md
    .. drs-ws-message:: logs     an example websocket message, built by the app's own functions
    .. drs-ws-close-codes::      the websocket close codes (CLOSE_* of consumers.py)

Roles: ``:setting:`LOG_MAX_BYTES```, ``:command:`drs_recover```, ``:check:`drs.E001```,
``:endpoint:`jobs_submit_create``` (an operationId). A reference to something that does not
exist is a warning, so ``sphinx-build -W`` fails on it.

The HTML build also gets ``_static/api/openapi.json`` / ``openapi.yaml`` (the schema) and
``_static/api/redoc.html`` (the schema rendered by ReDoc, from local files only).
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import re
import shutil
import textwrap
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
# Options every Django command has; the reference shows only a command's own.
DJANGO_OPTIONS = {
    "help",
    "version",
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
}
CHECK_CLASSES = {"Debug", "Info", "Warning", "Error", "Critical"}
OWN_TYPES = ("setting", "command", "check", "endpoint")


class GeneratedDirective(SphinxDirective):
    """A directive whose content is reStructuredText made from the code."""

    def rst(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.section()
        container.document = self.state.document
        source = f"<{self.name} in {self.env.docname}>"
        nested_parse_with_titles(self.state, StringList(self.rst(), source=source), container)
        return container.children


def literal(value: str) -> str:
    """``value`` as inline literal text (backquotes cannot be escaped inside one)."""
    return f"``{value}``" if "`" not in value else f":literal:`{value}`"


def indent(lines: list[str], by: int = 3) -> list[str]:
    return [(" " * by + line) if line else "" for line in lines]


def markdown(text: str) -> list[str]:
    """The Markdown of the OpenAPI descriptions (inline code, bold, lists) as RST lines."""
    text = re.sub(r"(?<!`)`((?:[^`\n]|\n(?!\s*\n))+?)`(?!`)", lambda m: literal(m.group(1)), text)
    lines: list[str] = []
    for line in textwrap.dedent(text).strip("\n").splitlines():
        item = re.match(r"(\d+\.|\*|-) ", line)
        if item and lines and lines[-1] and not re.match(r"(\d+\.|\*|-) |\s", lines[-1]):
            lines.append("")  # RST wants a blank line before a list
        lines.append(line)
    return lines


# --- the README's Quickstart -------------------------------------------------------------------


def readme_blocks() -> dict[str, str]:
    """The README's literal blocks by their first line (``# proj/celery.py``): the code of
    the Quickstart, which ``tests/test_readme.py`` runs. Read the same way as that test."""
    lines = (ROOT / "README.rst").read_text().splitlines()
    blocks: dict[str, str] = {}
    for i, line in enumerate(lines):
        if not (line.rstrip().endswith("::") or line.startswith(".. code-block::")):
            continue
        body = []
        for following in lines[i + 1 :]:
            if following.strip() and not following.startswith(" "):
                break
            body.append(following)
        code = textwrap.dedent("\n".join(body)).strip("\n")
        if code.strip():
            blocks.setdefault(code.splitlines()[0], code)
    return blocks


class ReadmeBlockDirective(SphinxDirective):
    """``.. readme-block:: # proj/celery.py``: the README's block that starts with that line,
    shown as Python (the tutorial and the README share one copy of the project's files)."""

    required_arguments = 1
    final_argument_whitespace = True

    def run(self) -> list[nodes.Node]:
        marker = self.arguments[0]
        code = readme_blocks().get(marker)
        if code is None:
            logger.warning(
                "README.rst has no block starting with %r", marker, location=self.get_location()
            )
            return []
        self.env.note_dependency(str(ROOT / "README.rst"))
        block = nodes.literal_block(code, code)
        block["language"] = "python"
        self.set_source_info(block)
        return [block]


# --- settings ---------------------------------------------------------------------------------


def size(value: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        scale = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]
        if value >= scale and value % scale == 0:
            return f"{value // scale} {unit}"
    return f"{value} bytes"


def duration(seconds: float) -> str:
    for unit, scale in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale and seconds % scale == 0:
            return f"{int(seconds // scale)} {unit}"
    return ""


@cache
def setting_entries() -> list[tuple[str, str, list[str]]]:
    """``(key, default's source, comment lines)`` of each key of ``conf.DEFAULTS``, in order."""
    from django_remote_submission import conf

    source = Path(conf.__file__).read_text()
    lines = source.splitlines()
    table = next(
        node.value
        for node in ast.parse(source).body
        if isinstance(node, ast.AnnAssign | ast.Assign)
        and "DEFAULTS" in [t.id for t in getattr(node, "targets", [getattr(node, "target", None)])]
    )
    entries = []
    for key, value in zip(table.keys, table.values, strict=True):
        comment: list[str] = []
        row = key.lineno - 2
        while row >= 0 and lines[row].strip().startswith("#"):
            comment.insert(0, lines[row].strip()[1:].strip())
            row -= 1
        entries.append((key.value, ast.get_source_segment(source, value), comment))
    assert [k for k, _, _ in entries] == list(conf.DEFAULTS), "DEFAULTS is not a literal dict"
    return entries


def default_text(key: str, expression: str) -> str:
    from django_remote_submission.conf import DEFAULTS

    value = DEFAULTS[key]
    shown = literal(json.dumps(value) if isinstance(value, str) else repr(value))
    notes = []
    if expression != repr(value) and not isinstance(value, str | list | bool):
        shown = f"{literal(expression)} = {literal(repr(value))}"
    if isinstance(value, int) and not isinstance(value, bool) and key.endswith("BYTES"):
        notes.append(size(value))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if human := duration(value):
            notes.append(human)
    return shown + (f" ({', '.join(notes)})" if notes else "")


def linked(text: str, keys: list[str], own: list[str]) -> str:
    """``text`` with the names of other settings made into links."""
    others = [k for k in keys if k not in own]
    pattern = r"(?<![\w`])(" + "|".join(map(re.escape, others)) + r")(?![\w`])"
    return re.sub(pattern, r":setting:`\1`", text)


class SettingsDirective(GeneratedDirective):
    """Every ``DRS`` setting; keys without a comment share the comment of the key above."""

    def rst(self) -> list[str]:
        entries = setting_entries()
        keys = [k for k, _, _ in entries]
        groups: list[list[tuple[str, str, list[str]]]] = []
        for entry in entries:
            if entry[2] or not groups:
                groups.append([entry])
            else:
                groups[-1].append(entry)
        out: list[str] = []
        for group in groups:
            names = [k for k, _, _ in group]
            if not group[0][2]:
                logger.warning("DRS setting %s has no comment in conf.py", names[0])
            out.append(f".. setting:: {names[0]}")
            out += [f"             {name}" for name in names[1:]]
            out.append("")
            if len(group) == 1:
                out.append(f"   Default: {default_text(*group[0][:2])}")
            else:
                out += [f"   | ``{k}``: {default_text(k, expr)}" for k, expr, _ in group]
            out.append("")
            out.append("   " + linked(" ".join(group[0][2]), keys, names))
            out.append("")
        return out


# --- the state machine ------------------------------------------------------------------------


class StatesDirective(GeneratedDirective):
    """The job states: a graphviz diagram (resubmissions dashed) and the transition table."""

    def rst(self) -> list[str]:
        from django_remote_submission.models import jobs

        states = [str(s) for s in jobs.Status]
        final = {str(s) for s in jobs.FINAL_STATES}
        active = {str(s) for s in jobs.ACTIVE_STATES}
        transitions = {
            str(k): sorted(map(str, v), key=states.index) for k, v in jobs.TRANSITIONS.items()
        }
        missing = set(states) - set(transitions)
        if missing:
            logger.warning("TRANSITIONS lacks the states %s", ", ".join(sorted(missing)))
        dot = [
            "digraph states {",
            '  rankdir=LR; bgcolor="transparent";',
            '  node [shape=box, style="rounded,filled", fillcolor="#f4f4f4",',
            '        fontname="sans-serif"];',
            '  edge [fontname="sans-serif", fontsize=10];',
            '  start [shape=point, width=0.12, label=""];',
            f'  start -> "{states[0]}";',
        ]
        for state in states:
            if state in final:
                dot.append(f'  "{state}" [peripheries=2];')
            elif state in active:
                dot.append(f'  "{state}" [fillcolor="#dcebff"];')
        for source in states:
            for target in transitions.get(source, []):
                if target == source:
                    continue
                if source in final:
                    dot.append(f'  "{source}" -> "{target}" [style=dashed, color="#888888"];')
                else:
                    dot.append(f'  "{source}" -> "{target}";')
        dot.append("  { rank=same; " + " ".join(f'"{s}";' for s in states if s in final) + " }")
        dot.append("}")
        out = [".. graphviz::", "   :align: center", "   :alt: The job state machine", ""]
        out += indent(dot)
        out += [
            "",
            ".. list-table:: ``TRANSITIONS``: the legal moves",
            "   :header-rows: 1",
            "   :widths: 15 15 70",
            "",
            "   * - state",
            "     - kind",
            "     - may move to",
        ]
        for state in states:
            kind = "final" if state in final else "active" if state in active else "not started"
            targets = ", ".join(literal(t) for t in transitions.get(state, [])) or "nothing"
            out += [f"   * - ``{state}``", f"     - {kind}", f"     - {targets}"]
        return out + [""]


# --- management commands ----------------------------------------------------------------------


def command_usage(name: str, actions: list) -> str:
    words = []
    for action in actions:
        if not action.option_strings:
            words.append(action.metavar or action.dest)
        elif action.nargs == 0:
            words.append(f"[{action.option_strings[-1]}]")
        else:
            metavar = action.metavar or action.dest.upper()
            words.append(f"[{action.option_strings[-1]} {metavar}]")
    return " ".join(["python manage.py", name, *words])


class CommandsDirective(GeneratedDirective):
    """Each management command of the app: what it does, its usage, arguments and examples."""

    def rst(self) -> list[str]:
        from django.core.management import find_commands, load_command_class

        import django_remote_submission.management as management

        out: list[str] = []
        folder = Path(management.__file__).parent
        for name in sorted(find_commands(str(folder))):
            command = load_command_class("django_remote_submission", name)
            parser = command.create_parser("manage.py", name)
            actions = [a for a in parser._actions if a.dest not in DJANGO_OPTIONS]
            out += [f".. command:: {name}", "", f"   {command.help}", ""]
            out += ["   .. code-block:: text", "", "      " + command_usage(name, actions), ""]
            for action in actions:
                label = ", ".join(action.option_strings) or action.metavar or action.dest
                text = re.sub(r"(?<![\w`])(--[\w-]+)", r"``\1``", action.help or "")
                out += [f"   {literal(label)}", f"      {text}"]
            examples = [
                "python " + line.strip()
                for line in (inspect.getmodule(command).__doc__ or "").splitlines()
                if line.strip().startswith("manage.py")
            ]
            if examples:
                out += ["", "   .. code-block:: sh", ""] + ["      " + e for e in examples]
            out.append("")
        return out


# --- system checks ----------------------------------------------------------------------------


def template(node: ast.AST, constants: dict[str, str]) -> str:
    """The text a message expression builds, its variable parts shown as ``<...>``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(template(part, constants) for part in node.values)
    if isinstance(node, ast.FormattedValue):
        return template(node.value, constants)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return template(node.left, constants) + template(node.right, constants)
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "join"
        and node.args
    ):
        return f"<{ast.unparse(node.args[0])}>"
    return f"<{ast.unparse(node)}>"


@cache
def check_entries() -> list[dict[str, str]]:
    """Every ``Error``/``Warning``/... with an ``id=`` in checks.py, with its function's doc."""
    from django_remote_submission import checks

    source = Path(checks.__file__).read_text()
    tree = ast.parse(source)
    constants = {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        for call in ast.walk(function):
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id in CHECK_CLASSES
            ):
                continue
            keywords = {k.arg: k.value for k in call.keywords}
            if "id" not in keywords:
                continue
            message = call.args[0] if call.args else keywords.get("msg")
            found.append(
                {
                    "id": keywords["id"].value,
                    "level": call.func.id,
                    "message": template(message, constants),
                    "hint": template(keywords["hint"], constants) if "hint" in keywords else "",
                    "function": function.name,
                }
            )
    return sorted(found, key=lambda c: c["id"])


def registered_checks() -> set[str]:
    """Names of the check functions the app registers (a check found in the source must be
    one of them: the page documents what runs)."""
    from django.core.checks.registry import registry

    return {
        f.__name__
        for f in registry.get_checks()
        if f.__module__ == "django_remote_submission.checks"
    }


class ChecksDirective(GeneratedDirective):
    def rst(self) -> list[str]:
        out: list[str] = []
        registered = registered_checks()
        for check in check_entries():
            if check["function"] not in registered and not check["function"].startswith("_"):
                logger.warning("check %s: %s is not registered", check["id"], check["function"])
            out += [f".. check:: {check['id']}", ""]
            out += [f"   :Level: {check['level']}", f"   :Message: {literal(check['message'])}"]
            if check["hint"]:
                out.append(f"   :Hint: {literal(check['hint'])}")
            out += [f"   :Checked by: ``checks.{check['function']}``", ""]
        return out


# --- the REST API -----------------------------------------------------------------------------


@cache
def openapi(fmt: str = "json") -> bytes:
    """The schema as the app serves it at ``api/schema/`` (JSON or YAML)."""
    from django.test import Client
    from django.urls import reverse

    response = Client().get(reverse("drs:drs_api:schema"), {"format": fmt})
    assert response.status_code == 200, response.content[:500]
    return response.content


def schema() -> dict[str, Any]:
    return json.loads(openapi("json"))


def resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def shown_components(spec: dict) -> list[str]:
    """The components the reference describes: objects the API answers with (the request
    bodies are described at their endpoint, pages and enums where they are used)."""
    return sorted(
        name
        for name, body in spec["components"]["schemas"].items()
        if not name.endswith("Request")
        and not name.startswith("Paginated")
        and "enum" not in body
        and body.get("properties")
    )


def component(spec: dict, name: str) -> str:
    if name in shown_components(spec):
        return f":ref:`{name} <api-schema-{name.lower()}>`"
    return f"``{name}``"


def type_of(spec: dict, node: dict) -> str:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = resolve(spec, node)
        if "enum" in target:
            return " | ".join(json.dumps(v) for v in target["enum"] if v is not None)
        return component(spec, name)
    if "allOf" in node or "oneOf" in node:
        return " | ".join(type_of(spec, n) for n in node.get("allOf", node.get("oneOf", [])))
    kind = node.get("type", "object")
    if kind == "array":
        return f"array of {type_of(spec, node.get('items', {}))}"
    if "enum" in node:
        return " | ".join(json.dumps(v) for v in node["enum"] if v is not None)
    if "format" in node:
        kind = f"{kind} ({node['format']})"
    return kind + (", nullable" if node.get("nullable") else "")


def field_rows(spec: dict, body: dict, title: str) -> list[str]:
    target = resolve(spec, body)
    required = set(target.get("required", []))
    rows = []
    for name, prop in target.get("properties", {}).items():
        flags = []
        if name in required:
            flags.append("required")
        if prop.get("readOnly"):
            flags.append("read-only")
        if prop.get("writeOnly"):
            flags.append("write-only")
        text = " ".join(prop.get("description", resolve(spec, prop).get("description", "")).split())
        rows += [
            f"   * - ``{name}``",
            f"     - {type_of(spec, prop)}{'; ' + ', '.join(flags) if flags else ''}",
            f"     - {' '.join(markdown(text))}" if text else "     -",
        ]
    if not rows:
        return []
    return [
        "",
        f".. list-table:: {title}",
        "   :header-rows: 1",
        "   :widths: 20 25 55",
        "",
        "   * - field",
        "     - type",
        "     - meaning",
        *rows,
        "",
    ]


@cache
def common_errors() -> dict[str, str]:
    """Error answers (code -> description) that many endpoints share: described once."""
    from collections import Counter

    seen = Counter(
        (code, answer.get("description", ""))
        for operations in schema()["paths"].values()
        for op in operations.values()
        for code, answer in op.get("responses", {}).items()
        if code >= "400"
    )
    common: dict[str, str] = {}
    for (code, text), count in seen.most_common():
        if count >= 5 and code not in common:
            common[code] = text
    return dict(sorted(common.items()))


def endpoint_rst(spec: dict, path: str, method: str, op: dict, common: str) -> list[str]:
    out = [f".. endpoint:: {op['operationId']}: {method.upper()} {path}", ""]
    if op.get("summary"):
        out += [f"   **{op['summary']}.**", ""]
    if op.get("description") and op["description"] != common:
        out += indent(markdown(op["description"])) + [""]
    params = op.get("parameters", [])
    if params:
        out += [
            "   .. list-table:: Parameters",
            "      :header-rows: 1",
            "      :widths: 20 10 20 50",
            "",
            "      * - name",
            "        - in",
            "        - type",
            "        - meaning",
        ]
        for p in params:
            text = " ".join(markdown(" ".join(p.get("description", "").split())))
            out += [
                f"      * - ``{p['name']}``",
                f"        - {p['in']}{' (required)' if p.get('required') else ''}",
                f"        - {type_of(spec, p.get('schema', {}))}",
                f"        - {text}" if text else "        -",
            ]
        out.append("")
    body = op.get("requestBody", {}).get("content", {})
    if "application/json" in body:
        ref = body["application/json"]["schema"]
        name = ref.get("$ref", "").rsplit("/", 1)[-1] or "object"
        out += indent(field_rows(spec, ref, f"Request body (``{name}``)"))
    out += ["   .. list-table:: Answers", "      :header-rows: 1", "      :widths: 10 90", ""]
    out += ["      * - code", "        - meaning"]
    shared = [
        code
        for code, answer in sorted(op.get("responses", {}).items())
        if common_errors().get(code) == answer.get("description", "")
    ]
    for code, answer in sorted(op.get("responses", {}).items()):
        if code in shared:
            continue
        text = " ".join(markdown(" ".join(answer.get("description", "").split())))
        content = answer.get("content", {})
        for media, body in content.items():
            if "schema" in body and "$ref" in body["schema"]:
                name = body["schema"]["$ref"].rsplit("/", 1)[-1]
                if name.startswith("Paginated"):
                    item = resolve(spec, body["schema"])["properties"]["results"]["items"]
                    text += f" (a page of {type_of(spec, item)}, {media})"
                else:
                    text += f" ({component(spec, name)}, {media})"
            elif "schema" in body and body["schema"].get("type") == "array":
                text += f" (array of {type_of(spec, body['schema'].get('items', {}))}, {media})"
        out += [f"      * - {code}", f"        - {text.strip() or '-'}"]
    if shared:
        out += [f"      * - {', '.join(shared)}", "        - See :ref:`api-errors`."]
    return out + [""]


class OpenAPIDirective(GeneratedDirective):
    """The endpoints of one tag (``:tag: jobs``), or the schema's own introduction."""

    option_spec = {"tag": directives.unchanged, "intro": directives.flag}

    def rst(self) -> list[str]:
        spec = schema()
        if "intro" in self.options:
            return markdown(spec["info"].get("description", "")) + [""]
        tag = self.options.get("tag")
        ops = [
            (path, method, op)
            for path, operations in spec["paths"].items()
            for method, op in operations.items()
            if tag in op.get("tags", [])
        ]
        if not ops:
            logger.warning("no endpoint of the API has the tag %r", tag)
            return []
        descriptions = [op.get("description", "") for _, _, op in ops]
        common = max(descriptions, key=descriptions.count)
        out = markdown(common) + [""] if descriptions.count(common) > 1 else []
        common = common if descriptions.count(common) > 1 else None
        for path, method, op in ops:
            out += endpoint_rst(spec, path, method, op, common)
        return out


class OpenAPIComponentsDirective(GeneratedDirective):
    """The objects the API answers with, each once, with its fields."""

    def rst(self) -> list[str]:
        spec = schema()
        out: list[str] = []
        for name in shown_components(spec):
            body = spec["components"]["schemas"][name]
            out += [f".. _api-schema-{name.lower()}:", "", f"``{name}``", "~" * (len(name) + 4), ""]
            if body.get("description"):
                out += markdown(" ".join(body["description"].split())) + [""]
            out += field_rows(spec, {"$ref": f"#/components/schemas/{name}"}, "Fields")
        return out


def all_tags() -> list[str]:
    return sorted(
        {t for ops in schema()["paths"].values() for op in ops.values() for t in op.get("tags", [])}
    )


class OpenAPITagsDirective(GeneratedDirective):
    """A section for every tag of the schema, so that a new group of endpoints appears."""

    def rst(self) -> list[str]:
        out = [
            ".. _api-errors:",
            "",
            "Errors",
            "-" * 6,
            "",
            "Answers many endpoints give, described here once (an endpoint's own table lists",
            "the others):",
            "",
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 10 90",
            "",
            "   * - code",
            "     - meaning",
        ]
        for code, text in common_errors().items():
            out += [f"   * - {code}", f"     - {' '.join(markdown(' '.join(text.split())))}"]
        out.append("")
        for tag in all_tags():
            out += [f".. _api-{tag}:", "", f"``{tag}/``", "-" * (len(tag) + 5), ""]
            out += [".. drs-openapi::", f"   :tag: {tag}", ""]
        return out


def parse_endpoint(env, signature: str, signode) -> str:
    from sphinx import addnodes

    operation, _, shown = signature.partition(": ")
    signode += addnodes.desc_name(shown, shown)
    return operation


REDOC_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}: OpenAPI schema</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body {{ margin: 0; }}</style></head>
<body><div id="redoc"></div>
<script src="redoc.standalone.js"></script>
<script>
Redoc.init({spec}, {{"hideDownloadButton": false}}, document.getElementById("redoc"));
</script>
</body></html>
"""


def write_api_files(app: Sphinx, exception: Exception | None) -> None:
    """The schema and a ReDoc page of it, beside the HTML (no network needed to read them)."""
    if exception is not None or app.builder.format != "html":
        return
    import drf_spectacular_sidecar

    target = Path(app.outdir) / "_static" / "api"
    target.mkdir(parents=True, exist_ok=True)
    (target / "openapi.json").write_bytes(openapi("json"))
    (target / "openapi.yaml").write_bytes(openapi("yaml"))
    bundle = (
        Path(drf_spectacular_sidecar.__file__).parent
        / "static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"
    )
    shutil.copy(bundle, target / "redoc.standalone.js")
    spec = schema()
    text = json.dumps(spec).replace("</", "<\\/")
    (target / "redoc.html").write_text(REDOC_PAGE.format(title=spec["info"]["title"], spec=text))


# --- the benchmark ----------------------------------------------------------------------------


class BenchDirective(GeneratedDirective):
    """The "Latest table" section of bench/README.md: its text and its table."""

    def rst(self) -> list[str]:
        text = (ROOT / "bench" / "README.md").read_text()
        section = text.split("## Latest table", 1)[1].split("\n## ", 1)[0]
        out: list[str] = []
        rows: list[list[str]] = []
        for line in section.strip().splitlines():
            if line.startswith("|"):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if not all(set(c) <= set("-: ") for c in cells):
                    rows.append(cells)
                continue
            if rows and not out[-1:] == ["__TABLE__"]:
                out.append("__TABLE__")
            out += markdown(line) if line.strip() else [""]
        if not rows:
            logger.warning("bench/README.md has no table under 'Latest table'")
            return []
        table = [
            ".. list-table::",
            "   :header-rows: 1",
            "",
        ]
        for cells in rows:
            table.append(f"   * - {' '.join(markdown(cells[0])) or '-'}")
            table += [f"     - {' '.join(markdown(c)) or '-'}" for c in cells[1:]]
        table.append("")
        if "__TABLE__" in out:
            at = out.index("__TABLE__")
            return out[:at] + [""] + table + out[at + 1 :] + [""]
        return out + [""] + table


# --- websockets -------------------------------------------------------------------------------


def ws_examples() -> dict[str, dict]:
    """The messages of the consumers, built by the functions the consumers use."""
    import uuid as uuidlib

    from django_remote_submission import consumers, events
    from django_remote_submission.models import Job, Log

    at = datetime(2025, 1, 1, 12, 0, 1, tzinfo=timezone.utc)
    job = Job(
        pk=7,
        uuid=uuidlib.UUID("0f7c5d0e-7c59-4c5e-9a51-3c1f7d8e2b10"),
        title="hello",
        status="running",
        server_id=1,
        started_at=at,
        modified=at,
    )
    row = Log(pk=12, job_id=7, time=at, stream="stdout", content="hello world\n", offset=0)
    status = consumers._job_message(events.job_payload(job))
    return {
        "jobs": {"type": "jobs", "jobs": [status["job"]], "seq": 1},
        "status": {**status, "seq": 1},
        "logs": {
            "type": "logs",
            "job": 7,
            "history": False,
            "logs": [events.log_payload(row)],
            "seq": 2,
        },
        "ack": {"type": "ack", "seq": 2},
    }


class WsMessageDirective(GeneratedDirective):
    required_arguments = 1

    def rst(self) -> list[str]:
        examples = ws_examples()
        kind = self.arguments[0]
        if kind not in examples:
            logger.warning("no websocket message %r (known: %s)", kind, ", ".join(examples))
            return []
        text = json.dumps(examples[kind], indent=2)
        return [".. code-block:: json", ""] + indent(text.splitlines()) + [""]


class WsCloseCodesDirective(GeneratedDirective):
    """The CLOSE_* constants of consumers.py; the content gives each one's meaning as
    ``NAME: meaning`` lines, and a constant without one is a warning."""

    has_content = True

    def rst(self) -> list[str]:
        from django_remote_submission import consumers

        meanings = {}
        for line in self.content:
            name, _, meaning = line.partition(":")
            meanings[name.strip()] = meaning.strip()
        codes = {n: v for n, v in vars(consumers).items() if n.startswith("CLOSE_")}
        for name in codes:
            if name not in meanings:
                logger.warning("the websocket close code %s is not documented", name)
        for name in meanings:
            if name not in codes:
                logger.warning("consumers.py has no close code %s", name)
        out = [".. list-table::", "   :header-rows: 1", "   :widths: 10 25 65", ""]
        out += ["   * - code", "     - constant", "     - meaning"]
        for name, code in sorted(codes.items(), key=lambda item: item[1]):
            out += [
                f"   * - {code}",
                f"     - ``consumers.{name}``",
                f"     - {meanings.get(name, '')}",
            ]
        return out + [""]


# --- docstrings -------------------------------------------------------------------------------
# The code's docstrings open with usage examples indented under a sentence, without "::".
# Shown as they are meant: such a block becomes a literal block; a docstring that is still not
# clean reStructuredText is shown as preformatted text rather than mangled.


def rst_problems(text: str) -> str:
    """The docutils warnings of ``text`` (empty when it is clean reStructuredText)."""
    from docutils.core import publish_doctree

    stream = io.StringIO()
    try:
        publish_doctree(
            text,
            settings_overrides={
                "report_level": 2,
                "halt_level": 5,
                "warning_stream": stream,
                "file_insertion_enabled": False,
                "raw_enabled": False,
            },
        )
    except Exception as exc:  # docutils gives up on some input
        return str(exc) or "unparsable"
    return stream.getvalue()


def with_literal_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        previous = next((x for x in reversed(out) if x.strip()), None)
        starts_example = (
            line.startswith("    ")
            and line.strip()
            and previous is not None
            and not previous.startswith(" ")
            and not previous.rstrip().endswith("::")
            and not re.match(r"([-*+] |\d+\. |\.\. )", previous)
        )
        if not starts_example:
            out.append(line)
            i += 1
            continue
        if out and out[-1].strip():
            out.append("")
        out += ["::", ""]
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
            out.append(lines[i])
            i += 1
        out.append("")
    return out


def clean_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    text = "\n".join(lines)
    if not text.strip() or not rst_problems(text):
        return
    fixed = with_literal_blocks(lines)
    if not rst_problems("\n".join(fixed)):
        lines[:] = fixed
        return
    lines[:] = ["::", ""] + ["    " + x if x else "" for x in lines] + [""]


# --- pages -------------------------------------------------------------------------------------


def url_rows(patterns, prefix: str = "") -> list[tuple[str, str, object]]:
    """``(route, name, view)`` of the app's pages, the API's include left out."""
    rows = []
    for pattern in patterns:
        if hasattr(pattern, "url_patterns"):
            continue  # api/: its own page
        rows.append((prefix + str(pattern.pattern), pattern.name, pattern.callback))
    return rows


class UrlsDirective(GeneratedDirective):
    """The routes of ``django_remote_submission.urls`` (and the websockets); the content gives
    ``name: meaning`` for views without a docstring, and a route with neither is a warning."""

    has_content = True

    def rst(self) -> list[str]:
        from django_remote_submission import routing, urls

        meanings = {}
        for line in self.content:
            name, _, meaning = line.partition(":")
            meanings[name.strip()] = meaning.strip()
        rows = url_rows(urls.urlpatterns) + url_rows(routing.websocket_urlpatterns)
        out = [".. list-table::", "   :header-rows: 1", "   :widths: 35 20 45", ""]
        out += ["   * - path", "     - name", "     - what"]
        for route, name, view in rows:
            doc = (getattr(view, "__doc__", None) or "").strip().split("\n\n")[0]
            if getattr(view, "__module__", "").startswith("django."):
                doc = ""  # Django's own views: the docs say what they are here
            meaning = meanings.pop(name, "") or " ".join(doc.split())
            if not meaning:
                logger.warning("the page %s (%s) has no description", route, name)
            out += [f"   * - ``/{route}``", f"     - ``{name}``", f"     - {meaning}"]
        for name in meanings:
            logger.warning("no page is named %r", name)
        return out + [""]


# --- references -------------------------------------------------------------------------------


def warn_missing(app: Sphinx, env, node, contnode) -> None:
    if node.get("reftype") in OWN_TYPES:
        logger.warning(
            "no %s %r (a reference to something the code does not have)",
            node["reftype"],
            node["reftarget"],
            location=node,
        )


def code_values(app: Sphinx, config) -> None:
    """Numbers the prose quotes, as substitutions from the code (``|HISTORY_ROWS|``)."""
    from django_remote_submission import consumers

    values = {
        "LATEST_JOBS": str(consumers.LATEST_JOBS),
        "HISTORY_ROWS": str(consumers.HISTORY_ROWS),
        "HISTORY_SIZE": size(consumers.HISTORY_CHARS),
        "RECHECK_EVERY": f"{consumers.RECHECK_EVERY:g}",
    }
    lines = [f".. |{name}| replace:: {value}" for name, value in values.items()]
    config.rst_epilog = (config.rst_epilog or "") + "\n" + "\n".join(lines) + "\n"


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_object_type("setting", "setting", indextemplate="pair: %s; DRS setting")
    app.add_object_type("command", "command", indextemplate="pair: %s; management command")
    app.add_object_type("check", "check", indextemplate="pair: %s; system check")
    app.add_object_type(
        "endpoint", "endpoint", indextemplate="pair: %s; REST endpoint", parse_node=parse_endpoint
    )
    app.add_directive("readme-block", ReadmeBlockDirective)
    app.add_directive("drs-settings", SettingsDirective)
    app.add_directive("drs-states", StatesDirective)
    app.add_directive("drs-commands", CommandsDirective)
    app.add_directive("drs-checks", ChecksDirective)
    app.add_directive("drs-openapi", OpenAPIDirective)
    app.add_directive("drs-openapi-tags", OpenAPITagsDirective)
    app.add_directive("drs-openapi-components", OpenAPIComponentsDirective)
    app.add_directive("drs-bench", BenchDirective)
    app.add_directive("drs-urls", UrlsDirective)
    app.add_directive("drs-ws-message", WsMessageDirective)
    app.add_directive("drs-ws-close-codes", WsCloseCodesDirective)
    app.connect("config-inited", code_values)
    app.connect("missing-reference", warn_missing)
    app.connect("autodoc-process-docstring", clean_docstring)
    app.connect("build-finished", write_api_files)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
