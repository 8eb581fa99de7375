"""Label and field selectors with the grammar of k8s.io/apimachinery labels.Parse
and fields.ParseSelector, so ``labelSelector``/``fieldSelector`` query strings mean
here what they mean to a real apiserver (including ``!=``/``notin`` matching
objects that lack the label)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from . import validation
from .errors import bad_request

# ---------------------------------------------------------------------------
# Label selectors
# ---------------------------------------------------------------------------

_SPECIAL = set("=!(),<>")
_EXPECTED = {"id": "identifier", "end": "'end of string'"}
_KEYWORDS = {"in", "notin"}


def _lex(text: str) -> list[tuple[str, str]]:
    """Tokens as (kind, literal): kind is the literal for symbols/keywords, else "id"."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in _SPECIAL:
            two = text[i : i + 2]
            if two in ("==", "!="):
                out.append((two, two))
                i += 2
            else:
                out.append((c, c))
                i += 1
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in _SPECIAL:
                j += 1
            word = text[i:j]
            out.append((word if word in _KEYWORDS else "id", word))
            i = j
    out.append(("end", ""))
    return out


class Requirement:
    def __init__(self, key: str, op: str, values: tuple[str, ...] = ()):
        self.key, self.op, self.values = key, op, values

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        if self.op in ("=", "==", "in"):
            return has and labels[self.key] in self.values
        if self.op in ("!=", "notin"):
            return not has or labels[self.key] not in self.values
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        # gt / lt compare integers; a label that is not one never matches.
        if not has:
            return False
        try:
            mine = int(labels[self.key])
        except ValueError:
            return False
        bound = int(self.values[0])
        return mine > bound if self.op == ">" else mine < bound


class LabelSelector:
    def __init__(self, requirements: list[Requirement]):
        self.requirements = requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def parse_labels(text: str | None) -> LabelSelector:
    """Parse a labelSelector; syntax or validation errors are 400 BadRequest."""
    if not text or not text.strip():
        return LabelSelector([])
    toks = _lex(text)
    pos = 0

    def peek():
        return toks[pos][0]

    def take(*kinds: str) -> str:
        nonlocal pos
        kind, lit = toks[pos]
        if kind not in kinds:
            wanted = " or ".join(_EXPECTED.get(k, f"'{k}'") for k in kinds)
            raise bad_request(f"found '{lit}', expected: {wanted}")
        pos += 1
        return lit

    reqs = []
    while True:
        if peek() == "!":
            take("!")
            reqs.append(_requirement(take("id"), "!", ()))
        else:
            key = take("id")
            op = peek()
            if op in (",", "end"):
                reqs.append(_requirement(key, "exists", ()))
            elif op in ("in", "notin"):
                take(op)
                take("(")
                values = []
                while True:
                    if peek() in (",", ")"):
                        values.append("")  # "k in (a,)" holds the empty value
                    else:
                        values.append(take("id"))
                    if take(",", ")") == ")":
                        break
                reqs.append(_requirement(key, op, tuple(values)))
            elif op in ("=", "==", "!=", "<", ">"):
                take(op)
                value = "" if peek() in (",", "end") else take("id")
                reqs.append(_requirement(key, op, (value,)))
            else:
                raise bad_request(f"found '{toks[pos][1]}', expected: in, notin, =, ==, !=, gt, lt")
        if take(",", "end") == "":
            return LabelSelector(reqs)


def _requirement(key: str, op: str, values: tuple[str, ...]) -> Requirement:
    problems = [f'key: Invalid value: "{key}": {m}' for m in validation.qualified_name(key)]
    if op in ("<", ">"):
        try:
            int(values[0])
        except ValueError:
            problems.append(f'values[0]: Invalid value: "{values[0]}": for \'Gt\', \'Lt\' operators, the value must be an integer')
    else:
        for i, v in enumerate(values):
            problems += [f'values[{i}][{key}]: Invalid value: "{v}": {m}' for m in validation.label_value(v)]
    if problems:
        raise bad_request("unable to parse requirement: " + "; ".join(problems))
    return Requirement(key, op, values)


# ---------------------------------------------------------------------------
# Field selectors
# ---------------------------------------------------------------------------

FieldGetter = Callable[[dict], str]


class FieldSelector:
    def __init__(self, terms: list[tuple[str, str, str]]):
        self.terms = terms  # (field, op, value), op one of "=", "!="

    def matches(self, fields: Mapping[str, str]) -> bool:
        for name, op, value in self.terms:
            if (fields.get(name, "") == value) != (op == "="):
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.terms

    def required_value(self, name: str) -> str | None:
        """The value ``name=...`` pins, used to narrow a scan (as the apiserver does
        for metadata.name / metadata.namespace)."""
        for field, op, value in self.terms:
            if field == name and op == "=":
                return value
        return None


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, i = [], [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if text[i] == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(text[i])
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\":
            if i + 1 >= len(value) or value[i + 1] not in "\\,=":
                raise bad_request(f"invalid field selector: invalid escape sequence in {value!r}")
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def parse_fields(text: str | None, supported: Mapping[str, FieldGetter]) -> FieldSelector:
    """Parse a fieldSelector; a field the resource does not index is a 400 with the
    apiserver's "field label not supported" message."""
    if not text or not text.strip():
        return FieldSelector([])
    terms = []
    for part in _split_unescaped(text, ","):
        term = _split_term(part)
        if term is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        name, op, value = term
        name = name.strip()
        if name not in supported:
            raise bad_request(f"field label not supported: {name}")
        terms.append((name, "!=" if op == "!=" else "=", _unescape(value)))
    return FieldSelector(terms)


def _split_term(part: str):
    i = 0
    while i < len(part):
        if part[i] == "\\":
            i += 2
            continue
        for op in ("!=", "==", "="):
            if part.startswith(op, i):
                return part[:i], op, part[i + len(op) :]
        i += 1
    return None


def field_set(obj: dict, getters: Mapping[str, FieldGetter]) -> dict[str, str]:
    return {name: get(obj) for name, get in getters.items()}

