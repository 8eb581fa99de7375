"""Calico label selectors: parse, canonicalise and evaluate.

The grammar, the semantics and the canonical string form follow Calico's
``libcalico-go/lib/selector`` (tokenizer, parser and AST):

    selector   := <empty> | or_expr
    or_expr    := and_expr ( "||" and_expr )*
    and_expr   := operation ( "&&" operation )*
    operation  := "!"* ( "(" or_expr ")" | "all()" | "global()" | "has(" key ")"
                       | key ( "==" | "!=" | "contains" | "starts with"
                             | "ends with" ) string
                       | key ( "in" | "not in" ) "{" [ string ( "," string )* [","] ] "}" )
    string     := '...' | "..."        (no escapes; runs to the next matching quote)
    key        := [a-zA-Z0-9_./-]{1,512}

Whitespace is spaces and tabs only, as in Calico.  ``!=`` and ``not in`` are
true when the label is absent; every other label test is false then.
``global()`` matches everything here, exactly like Calico's parser: its
"non-namespaced only" meaning is applied where Calico applies it, by rewriting
a rule's namespaceSelector ``global()`` to ``!has(projectcalico.org/namespace)``.

Each parsed selector is compiled once into a small Python function (source
generated from the AST, every string embedded with ``repr``), so evaluation
costs about as much as a hand-written predicate.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping

__all__ = [
    "MAX_LABEL_LENGTH",
    "MAX_NESTING",
    "Selector",
    "SelectorError",
    "parse",
    "parse_uncached",
]

MAX_LABEL_LENGTH = 512
# Python's own compiler rejects very deep expressions; 50 levels of
# parentheses is far beyond any real selector.
MAX_NESTING = 50

_WHITESPACE = " \t"
_LABEL_RE = re.compile(r"[A-Za-z0-9_./-]+")


class SelectorError(ValueError):
    """A selector string that does not parse.

    ``position`` is the 0-based offset into ``text`` where the problem was found.
    """

    def __init__(self, text: str, position: int, reason: str) -> None:
        self.text = text
        self.position = position
        self.reason = reason
        super().__init__(f"invalid selector at position {position}: {reason} in {_quote(text)}")

    def __reduce__(self):
        return type(self), (self.text, self.position, self.reason)


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------

# Token kinds.  A token is a tuple (kind, value, position).
LABEL, STRING, HAS, ALL, GLOBAL = "label", "string", "has", "all", "global"
EQ, NE, CONTAINS, STARTS_WITH, ENDS_WITH = "==", "!=", "contains", "starts with", "ends with"
IN, NOT_IN, NOT, AND, OR = "in", "not in", "!", "&&", "||"
LPAREN, RPAREN, LBRACE, RBRACE, COMMA, EOF = "(", ")", "{", "}", ",", "eof"

_SINGLE_CHAR = {"(": LPAREN, ")": RPAREN, "{": LBRACE, "}": RBRACE, ",": COMMA}
_DOUBLE_CHAR = {"=": EQ, "&": AND, "|": OR}
# Words recognised only straight after a label; the second word may be
# separated from the first by whitespace or not at all ("startswith").
_OPERATOR_WORDS = (
    ("contains", "", CONTAINS),
    ("starts", "with", STARTS_WITH),
    ("ends", "with", ENDS_WITH),
    ("not", "in", NOT_IN),
    ("in", "", IN),
)
_NULLARY_FUNCTIONS = (("all(", ALL), ("global(", GLOBAL))


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos = _skip_ws(text, 0)
    while pos < len(text):
        ch = text[pos]
        if ch in _SINGLE_CHAR:
            tokens.append((_SINGLE_CHAR[ch], ch, pos))
            pos += 1
        elif ch == "'" or ch == '"':
            pos = _read_string(text, pos, tokens)
        elif ch in _DOUBLE_CHAR:
            if not text.startswith(ch * 2, pos):
                raise SelectorError(text, pos, f"expected '{ch * 2}', found a single '{ch}'")
            tokens.append((_DOUBLE_CHAR[ch], ch * 2, pos))
            pos += 2
        elif ch == "!":
            kind = NE if text.startswith("!=", pos) else NOT
            tokens.append((kind, kind, pos))
            pos += len(kind)
        elif tokens and tokens[-1][0] == LABEL:
            pos = _read_operator_word(text, pos, tokens)
        else:
            pos = _read_function_or_label(text, pos, tokens)
        pos = _skip_ws(text, pos)
    tokens.append((EOF, "", len(text)))
    return tokens


def _read_string(text: str, pos: int, tokens: list) -> int:
    end = text.find(text[pos], pos + 1)
    if end < 0:
        raise SelectorError(text, pos, "unterminated string")
    tokens.append((STRING, text[pos + 1 : end], pos))
    return end + 1


def _read_operator_word(text: str, pos: int, tokens: list) -> int:
    for first, second, kind in _OPERATOR_WORDS:
        if not text.startswith(first, pos):
            continue
        end = pos + len(first)
        if second:
            end = _skip_ws(text, end)
            if not text.startswith(second, end):
                raise SelectorError(text, end, f"expected '{second}' after '{first}'")
            end += len(second)
        tokens.append((kind, kind, pos))
        return end
    raise SelectorError(text, pos, f"expected an operator after label '{tokens[-1][1]}'")


def _read_function_or_label(text: str, pos: int, tokens: list) -> int:
    if text.startswith("has(", pos):
        return _read_has(text, pos, tokens)
    for prefix, kind in _NULLARY_FUNCTIONS:
        if text.startswith(prefix, pos):
            end = _skip_ws(text, pos + len(prefix))
            if not text.startswith(")", end):
                raise SelectorError(text, end, f"expected ')' after '{prefix}'")
            tokens.append((kind, prefix + ")", pos))
            return end + 1
    label, end = _read_label(text, pos)
    if label is None:
        raise SelectorError(text, pos, f"unexpected character {text[pos]!r}")
    tokens.append((LABEL, label, pos))
    return end


def _read_has(text: str, pos: int, tokens: list) -> int:
    start = _skip_ws(text, pos + len("has("))
    label, end = _read_label(text, start)
    if label is None:
        raise SelectorError(text, start, "expected a label name inside has(...)")
    end = _skip_ws(text, end)
    if not text.startswith(")", end):
        raise SelectorError(text, end, f"expected ')' after 'has({label}'")
    tokens.append((HAS, label, pos))
    return end + 1


def _read_label(text: str, pos: int) -> tuple[str | None, int]:
    match = _LABEL_RE.match(text, pos)
    if match is None:
        return None, pos
    if match.end() - pos > MAX_LABEL_LENGTH:
        raise SelectorError(text, pos, f"label key longer than {MAX_LABEL_LENGTH} characters")
    return match.group(), match.end()


# --------------------------------------------------------------------------
# AST.  Each node renders Calico's canonical text and a Python expression over
# the labels mapping ``l``.
# --------------------------------------------------------------------------


def _quote(value: str) -> str:
    # Values cannot contain both quote characters, as there are no escapes.
    quote = "'" if '"' in value else '"'
    return f"{quote}{value}{quote}"


class _Node:
    __slots__ = ()

    def canonical(self) -> str:
        raise NotImplementedError

    def code(self) -> str:
        raise NotImplementedError

    def collect_labels(self, out: set[str]) -> None:
        pass


class _All(_Node):
    __slots__ = ()

    def canonical(self) -> str:
        return "all()"

    def code(self) -> str:
        return "True"


class _Global(_Node):
    __slots__ = ()

    def canonical(self) -> str:
        return "global()"

    def code(self) -> str:
        return "True"


class _Has(_Node):
    __slots__ = ("label",)

    def __init__(self, label: str) -> None:
        self.label = label

    def canonical(self) -> str:
        return f"has({self.label})"

    def code(self) -> str:
        return f"{self.label!r} in l"

    def collect_labels(self, out: set[str]) -> None:
        out.add(self.label)


class _LabelValue(_Node):
    """``label <op> "value"``."""

    __slots__ = ("label", "value")
    op = ""

    def __init__(self, label: str, value: str) -> None:
        self.label = label
        self.value = value

    def canonical(self) -> str:
        return f"{self.label} {self.op} {_quote(self.value)}"

    def collect_labels(self, out: set[str]) -> None:
        out.add(self.label)


class _Eq(_LabelValue):
    __slots__ = ()
    op = EQ

    def code(self) -> str:
        return f"l.get({self.label!r}) == {self.value!r}"


class _Ne(_LabelValue):
    __slots__ = ()
    op = NE

    def code(self) -> str:
        return f"l.get({self.label!r}) != {self.value!r}"


# For the substring tests an absent label reads as "", which can only match an
# empty value; that case is exactly has(label).
class _Contains(_LabelValue):
    __slots__ = ()
    op = CONTAINS

    def code(self) -> str:
        if not self.value:
            return f"{self.label!r} in l"
        return f"{self.value!r} in l.get({self.label!r}, '')"


class _StartsWith(_LabelValue):
    __slots__ = ()
    op = STARTS_WITH

    def code(self) -> str:
        if not self.value:
            return f"{self.label!r} in l"
        return f"l.get({self.label!r}, '').startswith({self.value!r})"


class _EndsWith(_LabelValue):
    __slots__ = ()
    op = ENDS_WITH

    def code(self) -> str:
        if not self.value:
            return f"{self.label!r} in l"
        return f"l.get({self.label!r}, '').endswith({self.value!r})"


class _InSet(_Node):
    """``label in {...}``; ``negated`` gives ``not in``."""

    __slots__ = ("label", "values", "negated")

    def __init__(self, label: str, values: list[str], negated: bool) -> None:
        self.label = label
        self.values = tuple(sorted(set(values)))
        self.negated = negated

    def canonical(self) -> str:
        op = NOT_IN if self.negated else IN
        items = ", ".join(_quote(v) for v in self.values)
        return f"{self.label} {op} {{{items}}}"

    def code(self) -> str:
        if not self.values:
            return "True" if self.negated else "False"
        lookup = f"l.get({self.label!r})"
        if len(self.values) == 1:
            return f"{lookup} {'!=' if self.negated else '=='} {self.values[0]!r}"
        # A literal set of constants compiles to a frozenset constant.
        items = ", ".join(repr(v) for v in self.values)
        return f"{lookup} {'not in' if self.negated else 'in'} {{{items}}}"

    def collect_labels(self, out: set[str]) -> None:
        out.add(self.label)


class _Not(_Node):
    __slots__ = ("operand",)

    def __init__(self, operand: _Node) -> None:
        self.operand = operand

    def canonical(self) -> str:
        return "!" + self.operand.canonical()

    def code(self) -> str:
        return f"not ({self.operand.code()})"

    def collect_labels(self, out: set[str]) -> None:
        self.operand.collect_labels(out)


class _BoolOp(_Node):
    __slots__ = ("operands",)
    symbol = ""
    keyword = ""

    def __init__(self, operands: list[_Node]) -> None:
        self.operands = tuple(operands)

    def canonical(self) -> str:
        joiner = f" {self.symbol} "
        return "(" + joiner.join(op.canonical() for op in self.operands) + ")"

    def code(self) -> str:
        joiner = f" {self.keyword} "
        return "(" + joiner.join(op.code() for op in self.operands) + ")"

    def collect_labels(self, out: set[str]) -> None:
        for op in self.operands:
            op.collect_labels(out)


class _And(_BoolOp):
    __slots__ = ()
    symbol, keyword = AND, "and"


class _Or(_BoolOp):
    __slots__ = ()
    symbol, keyword = OR, "or"


_VALUE_NODES = {EQ: _Eq, NE: _Ne, CONTAINS: _Contains, STARTS_WITH: _StartsWith, ENDS_WITH: _EndsWith}


# --------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------


def _describe(token: tuple[str, str, int]) -> str:
    kind, value, _ = token
    if kind == EOF:
        return "end of selector"
    if kind == LABEL:
        return f"label '{value}'"
    if kind == STRING:
        return f"string {_quote(value)}"
    if kind == HAS:
        return f"'has({value})'"
    return f"'{value}'"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0

    def error(self, token: tuple[str, str, int], reason: str) -> SelectorError:
        return SelectorError(self.text, token[2], reason)

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.index]

    def take(self) -> tuple[str, str, int]:
        token = self.tokens[self.index]
        if token[0] != EOF:
            self.index += 1
        return token

    def parse(self) -> _Node:
        if self.peek()[0] == EOF:
            return _All()
        node = self.parse_or()
        token = self.peek()
        if token[0] != EOF:
            raise self.error(token, f"expected '&&', '||' or end of selector, found {_describe(token)}")
        return node

    def parse_or(self) -> _Node:
        operands = [self.parse_and()]
        while self.peek()[0] == OR:
            self.take()
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else _Or(operands)

    def parse_and(self) -> _Node:
        operands = [self.parse_operation()]
        while self.peek()[0] == AND:
            self.take()
            operands.append(self.parse_operation())
        return operands[0] if len(operands) == 1 else _And(operands)

    def parse_operation(self) -> _Node:
        # Like Calico, a run of "!" collapses to a single negation (or none).
        negated = False
        while self.peek()[0] == NOT:
            self.take()
            negated = not negated
        node = self.parse_term()
        return _Not(node) if negated else node

    def parse_term(self) -> _Node:
        token = self.take()
        kind = token[0]
        if kind == HAS:
            return _Has(token[1])
        if kind == ALL:
            return _All()
        if kind == GLOBAL:
            return _Global()
        if kind == LABEL:
            return self.parse_comparison(token[1])
        if kind == LPAREN:
            return self.parse_group(token)
        raise self.error(
            token,
            f"expected a label, has(), all(), global(), '!' or '(', found {_describe(token)}",
        )

    def parse_group(self, lparen: tuple[str, str, int]) -> _Node:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(lparen, f"parentheses nested deeper than {MAX_NESTING} levels")
        node = self.parse_or()
        token = self.take()
        if token[0] != RPAREN:
            raise self.error(token, f"expected ')' to close the '(' at position {lparen[2]}, found {_describe(token)}")
        self.depth -= 1
        return node

    def parse_comparison(self, label: str) -> _Node:
        op = self.take()
        if op[0] in _VALUE_NODES:
            value = self.take()
            if value[0] != STRING:
                raise self.error(value, f"expected a quoted value after '{op[0]}', found {_describe(value)}")
            return _VALUE_NODES[op[0]](label, value[1])
        if op[0] in (IN, NOT_IN):
            return _InSet(label, self.parse_set(op[0]), negated=op[0] == NOT_IN)
        raise self.error(op, f"expected an operator after label '{label}', found {_describe(op)}")

    def parse_set(self, op: str) -> list[str]:
        token = self.take()
        if token[0] != LBRACE:
            raise self.error(token, f"expected '{{' after '{op}', found {_describe(token)}")
        values: list[str] = []
        want_value = True
        # Accepts "{}", "{'a'}", "{'a', 'b'}" and, as Calico does, "{'a',}".
        while True:
            token = self.take()
            if token[0] == RBRACE:
                return values
            if want_value and token[0] == STRING:
                values.append(token[1])
                want_value = False
            elif not want_value and token[0] == COMMA:
                want_value = True
            else:
                expected = "a quoted value or '}'" if want_value else "',' or '}'"
                raise self.error(token, f"expected {expected} in set, found {_describe(token)}")


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def _compile(root: _Node) -> Callable[[Mapping[str, str]], bool]:
    source = f"def evaluate(l):\n    return {root.code()}\n"
    namespace: dict = {}
    # The generated code needs no builtins; withholding them keeps it inert.
    exec(compile(source, "<selector>", "exec"), {"__builtins__": {}}, namespace)
    return namespace["evaluate"]


class Selector:
    """A parsed, compiled selector.

    ``evaluate(labels) -> bool`` tests a labels mapping.  ``str()`` is Calico's
    canonical form, which is also what equality and hashing use.
    """

    __slots__ = ("_root", "_canonical", "_hash", "evaluate", "__weakref__")

    evaluate: Callable[[Mapping[str, str]], bool]

    def __init__(self, root: _Node) -> None:
        self._root = root
        self._canonical = root.canonical()
        self._hash = hash(self._canonical)
        # An instance attribute, not a method: calls go straight to the
        # compiled function with no wrapper frame.
        self.evaluate = _compile(root)

    def labels_used(self) -> frozenset[str]:
        """Label keys the selector looks at."""
        out: set[str] = set()
        self._root.collect_labels(out)
        return frozenset(out)

    def __str__(self) -> str:
        return self._canonical

    def __repr__(self) -> str:
        return f"Selector({self._canonical!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selector):
            return NotImplemented
        return self._canonical == other._canonical

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self):
        return parse, (self._canonical,)


def parse_uncached(text: str) -> Selector:
    """Parse ``text`` without consulting the cache; raises SelectorError."""
    if not isinstance(text, str):
        raise TypeError(f"selector must be a str, not {type(text).__name__}")
    return Selector(_Parser(text).parse())


@functools.lru_cache(maxsize=8192)
def parse(text: str) -> Selector:
    """Parse ``text`` (cached by string); raises SelectorError."""
    return parse_uncached(text)
