"""kubectl's JSONPath templates (``-o jsonpath=``, ``custom-columns``, ``--sort-by``).

A template is text with actions in braces: ``{.items[*].metadata.name}`` prints every match,
space-separated; ``{range .items[*]}...{end}`` repeats its body for each match, with
``.``/``@`` paths relative to that match; ``{"\\n"}`` is a literal (``\\n``, ``\\t``, ``\\\\``);
``{$.path}`` is from the root. The paths themselves are evaluated by jsonpath-ng (its ``ext``
parser: filters such as ``[?(@.type=="Ready")]``, slices, ``..``), not by hand. Text outside
the braces is printed as it is. A path that matches nothing prints nothing, as in kubectl.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonpath_ng import JSONPath
from jsonpath_ng.ext.parser import parse as _parse

from cli.errors import InputError

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"'}


class TemplateError(InputError):
    """A template that cannot be read (exit 2, like any bad input)."""


@dataclass(frozen=True)
class Path:
    """One JSONPath, relative to the current object unless it starts with ``$``."""

    text: str
    compiled: JSONPath
    from_root: bool

    def find(self, current: Any, root: Any) -> list[Any]:
        try:
            return [m.value for m in self.compiled.find(root if self.from_root else current)]
        except Exception as exc:  # jsonpath-ng's own failures on odd data: the user's path
            raise TemplateError(f"cannot evaluate JSONPath {self.text!r}: {exc}") from None


def compile_path(text: str) -> Path:
    """``.a.b``, ``a.b``, ``@.a``, ``$.a``, ``[0]`` or ``{.a.b}`` (kubectl's forms)."""
    expr = text.strip()
    if expr.startswith("{") and expr.endswith("}"):
        expr = expr[1:-1].strip()
    if not expr:
        raise TemplateError(f"empty JSONPath in {text!r}")
    from_root = expr.startswith("$")
    if expr.startswith("@"):
        expr = expr[1:]
    if not from_root:
        expr = "$" + ("" if expr.startswith((".", "[")) else ".") + expr
    if expr == "$.":
        expr = "$"
    try:
        compiled = _parse(expr)
    except Exception as exc:  # jsonpath-ng raises several types, all for a bad expression
        raise TemplateError(f"invalid JSONPath {text.strip()!r}: {exc}") from None
    return Path(text.strip(), compiled, from_root)


def text_of(value: Any) -> str:
    """How kubectl prints one match: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"))


@dataclass
class _Range:
    path: Path
    body: list[_Node] = field(default_factory=list)


_Node = str | Path | _Range
"""Text to print (literals and text between actions), a path to print, or a range."""


@dataclass(frozen=True)
class Template:
    source: str
    nodes: list[_Node]

    def render(self, data: Any) -> str:
        out: list[str] = []
        _render(self.nodes, data, data, out)
        return "".join(out)


def _render(nodes: Sequence[_Node], current: Any, root: Any, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, Path):
            out.append(" ".join(text_of(v) for v in node.find(current, root)))
        else:
            for item in node.path.find(current, root):
                _render(node.body, item, root, out)


def _literal(action: str) -> str:
    body = action[1:-1]
    chars: list[str] = []
    i = 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            chars.append(_ESCAPES.get(body[i + 1], "\\" + body[i + 1]))
            i += 2
        else:
            chars.append(body[i])
            i += 1
    return "".join(chars)


def _actions(template: str) -> list[tuple[bool, str]]:
    """(is_action, text) pieces; braces inside quotes do not end an action."""
    pieces: list[tuple[bool, str]] = []
    i = 0
    while i < len(template):
        start = template.find("{", i)
        if start < 0:
            pieces.append((False, template[i:]))
            break
        if start > i:
            pieces.append((False, template[i:start]))
        j, quote = start + 1, ""
        while j < len(template):
            ch = template[j]
            if quote:
                if ch == "\\":
                    j += 1
                elif ch == quote:
                    quote = ""
            elif ch in "\"'":
                quote = ch
            elif ch == "}":
                break
            j += 1
        if j >= len(template):
            raise TemplateError(f"unclosed action in template {template!r}: a '{{' lacks its '}}'")
        pieces.append((True, template[start + 1 : j].strip()))
        i = j + 1
    return pieces


def compile_template(template: str) -> Template:
    """Parse once, before any request: a bad template is exit 2 with nothing fetched."""
    root: list[_Node] = []
    stack: list[list[_Node]] = [root]
    for is_action, text in _actions(template):
        body = stack[-1]
        if not is_action:
            body.append(text)
        elif not text:
            raise TemplateError(f"empty action '{{}}' in template {template!r}")
        elif text[0] in "\"'" and len(text) >= 2 and text[-1] == text[0]:
            body.append(_literal(text))
        elif text == "end":
            if len(stack) == 1:
                raise TemplateError(f"{{end}} without a {{range}} in template {template!r}")
            stack.pop()
        elif text.split(None, 1)[0] == "range":
            parts = text.split(None, 1)
            if len(parts) < 2:
                raise TemplateError("{range} needs a path, e.g. {range .items[*]}")
            loop = _Range(compile_path(parts[1]))
            body.append(loop)
            stack.append(loop.body)
        else:
            body.append(compile_path(text))
    if len(stack) > 1:
        raise TemplateError(f"{{range}} without its {{end}} in template {template!r}")
    return Template(template, root)
