"""Tests for pycalico.core.selector (Calico's label selector language)."""

import pickle
import random
import types
from collections.abc import Mapping

import pytest

from pycalico.core.selector import (
    MAX_LABEL_LENGTH,
    MAX_NESTING,
    Selector,
    SelectorError,
    parse,
    parse_uncached,
)


def matches(text, labels):
    return parse(text).evaluate(labels)


# ---------------------------------------------------------------------------
# Operator semantics: (selector, labels, expected)
# ---------------------------------------------------------------------------

OPERATOR_CASES = [
    # ==
    ("a == 'b'", {"a": "b"}, True),
    ("a == 'b'", {"a": "c"}, False),
    ("a == 'b'", {}, False),
    ("a == 'b'", {"c": "b"}, False),
    ("a == ''", {"a": ""}, True),
    ("a == ''", {}, False),
    # !=
    ("a != 'b'", {"a": "c"}, True),
    ("a != 'b'", {"a": "b"}, False),
    ("a != 'b'", {}, True),
    ("a != ''", {}, True),
    ("a != ''", {"a": ""}, False),
    # in
    ("a in {'x', 'y'}", {"a": "x"}, True),
    ("a in {'x', 'y'}", {"a": "y"}, True),
    ("a in {'x', 'y'}", {"a": "z"}, False),
    ("a in {'x', 'y'}", {}, False),
    ("a in {'x'}", {"a": "x"}, True),
    ("a in {'x'}", {"a": "xx"}, False),
    ("a in {'x'}", {}, False),
    # not in
    ("a not in {'x', 'y'}", {"a": "z"}, True),
    ("a not in {'x', 'y'}", {"a": "x"}, False),
    ("a not in {'x', 'y'}", {}, True),
    ("a not in {'x'}", {"a": "x"}, False),
    ("a not in {'x'}", {"a": "y"}, True),
    ("a not in {'x'}", {}, True),
    # Empty sets: "in {}" matches nothing, "not in {}" matches everything.
    ("a in {}", {"a": ""}, False),
    ("a in {}", {}, False),
    ("a not in {}", {"a": "x"}, True),
    ("a not in {}", {}, True),
    # has / !has
    ("has(a)", {"a": ""}, True),
    ("has(a)", {"a": "x"}, True),
    ("has(a)", {"b": "x"}, False),
    ("!has(a)", {"b": "x"}, True),
    ("!has(a)", {"a": "x"}, False),
    ("! has(a)", {}, True),
    # contains
    ("a contains 'b'", {"a": "abc"}, True),
    ("a contains 'b'", {"a": "b"}, True),
    ("a contains 'b'", {"a": "ac"}, False),
    ("a contains 'b'", {}, False),
    ("a contains ''", {"a": "x"}, True),
    ("a contains ''", {"a": ""}, True),
    ("a contains ''", {}, False),
    # starts with
    ("a starts with 'ab'", {"a": "abc"}, True),
    ("a starts with 'ab'", {"a": "ab"}, True),
    ("a starts with 'ab'", {"a": "cab"}, False),
    ("a starts with 'ab'", {}, False),
    ("a starts with ''", {"a": ""}, True),
    ("a starts with ''", {}, False),
    # ends with
    ("a ends with 'bc'", {"a": "abc"}, True),
    ("a ends with 'bc'", {"a": "bcd"}, False),
    ("a ends with 'bc'", {}, False),
    ("a ends with ''", {"a": "q"}, True),
    ("a ends with ''", {}, False),
    # all() / global() / empty
    ("all()", {}, True),
    ("all()", {"a": "b"}, True),
    ("", {}, True),
    ("   ", {"a": "b"}, True),
    ("\t", {}, True),
    ("!all()", {}, False),
    ("global()", {}, True),
    ("global()", {"projectcalico.org/namespace": "default"}, True),
    ("!global()", {}, False),
    # Negation of every kind of term.
    ("!a == 'b'", {"a": "b"}, False),
    ("!a == 'b'", {}, True),
    ("!(a == 'b')", {"a": "c"}, True),
    ("!a != 'b'", {}, False),
    ("!a in {'x'}", {"a": "y"}, True),
    ("!a in {'x'}", {}, True),
    ("!a not in {'x'}", {}, False),
    ("!a contains 'x'", {}, True),
    ("!a starts with 'x'", {"a": "xy"}, False),
    ("!a ends with 'x'", {"a": "yx"}, False),
]


@pytest.mark.parametrize("text,labels,expected", OPERATOR_CASES)
def test_operator_semantics(text, labels, expected):
    assert matches(text, labels) is expected


# Calico's own selector test table (libcalico-go parser_test.go), as facts:
# selector, labels that must match, labels that must not.
CALICO_TABLE = [
    ('a == "b"', [{"a": "b"}, {"a": "b", "c": "d"}], [{}, {"a": "c"}, {"c": "d"}]),
    ('a == "b" && c == "d"', [{"a": "b", "c": "d"}],
     [{}, {"a": "b", "c": "e"}, {"a": "c", "c": "d"}, {"c": "d"}, {"a": "b"}]),
    ('a == "b" || c == "d"', [{"a": "b", "c": "d"}, {"a": "b"}, {"c": "d"}],
     [{}, {"a": "e", "c": "e"}, {"c": "e"}, {"a": "e"}]),
    ("""a in {"'", '"', "c"}""", [{"a": "c"}, {"a": '"'}, {"a": "'"}], [{}, {"a": "e"}]),
    ("""a not in {"'", '"', "c"}""", [{}, {"a": "e"}], [{"a": "c"}, {"a": '"'}, {"a": "'"}]),
    ('a contains "a"', [{"a": "a"}, {"a": "bab"}, {"a": "aaa", "b": "c"}], [{}, {"a": "b"}, {"b": "aaa"}]),
    ('a starts with "a"', [{"a": "a"}, {"a": "abb"}], [{}, {"a": "b"}, {"a": "baa"}, {"b": "aaa"}]),
    ('a ends with "a"', [{"a": "a"}, {"a": "bba"}], [{}, {"a": "b"}, {"a": "aab"}, {"b": "aaa"}]),
    ('!a in {"a"}', [{"a": "b"}], []),
    ("!!has(b)", [], [{"a": "b"}]),
    ("!!! has(a)", [], [{"a": "b"}]),
    ("!! ! has(a)", [], [{"a": "b"}]),
    ("! !!has(a)", [], [{"a": "b"}]),
    ("a != 'a1' && !b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("has(a) && !has(b)", [{"a": "a"}], []),
    ("!(!has(a) || has(b))", [{"a": "a"}], []),
    ("!(has(b) || !has(a))", [{"a": "a"}], []),
    ("a != 'a1' || b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("! a == 'a1' || ! b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a == 'a1' || b != 'b1'", [{"a": "a1", "b": "b1"}], []),
]


@pytest.mark.parametrize("text,good,bad", CALICO_TABLE)
def test_calico_table(text, good, bad):
    sel = parse(text)
    again = parse(str(sel))
    for labels in good:
        assert sel.evaluate(labels) and again.evaluate(labels)
    for labels in bad:
        assert not sel.evaluate(labels) and not again.evaluate(labels)


# ---------------------------------------------------------------------------
# Precedence, nesting, negation
# ---------------------------------------------------------------------------

def _bits(n):
    return [tuple(bool(i >> k & 1) for k in range(n)) for i in range(2 ** n)]


def _labels_for(bits):
    return {name: "1" for name, on in zip("abcd", bits) if on}


@pytest.mark.parametrize(
    "text,python",
    [
        ("has(a) || has(b) && has(c)", lambda a, b, c, d: a or (b and c)),
        ("has(a) && has(b) || has(c)", lambda a, b, c, d: (a and b) or c),
        ("(has(a) || has(b)) && has(c)", lambda a, b, c, d: (a or b) and c),
        ("!has(a) || has(b)", lambda a, b, c, d: (not a) or b),
        ("!(has(a) || has(b))", lambda a, b, c, d: not (a or b)),
        ("!(has(a) && has(b)) && has(c)", lambda a, b, c, d: not (a and b) and c),
        ("has(a) && has(b) && has(c) || has(d)", lambda a, b, c, d: (a and b and c) or d),
        ("has(a) || has(b) || has(c) && !has(d)", lambda a, b, c, d: a or b or (c and not d)),
        ("((has(a)) && ((has(b) || (has(c)))))", lambda a, b, c, d: a and (b or c)),
        ("!(!(has(a) && !(has(b) || has(c))) || has(d))",
         lambda a, b, c, d: not ((not (a and not (b or c))) or d)),
    ],
)
def test_precedence_truth_tables(text, python):
    sel = parse(text)
    for bits in _bits(4):
        assert sel.evaluate(_labels_for(bits)) is python(*bits), bits


def test_and_binds_tighter_than_or_in_canonical_form():
    assert str(parse("a == 'x' || b == 'y' && c == 'z'")) == '(a == "x" || (b == "y" && c == "z"))'
    assert str(parse("a == 'x' && b == 'y' || c == 'z'")) == '((a == "x" && b == "y") || c == "z")'


def test_bang_runs_collapse_like_calico():
    assert str(parse("!!has(a)")) == "has(a)"
    assert str(parse("!!!has(a)")) == "!has(a)"
    assert str(parse("! ! ! ! a == 'b'")) == 'a == "b"'
    # A negated group whose content is itself negated keeps both bangs.
    assert str(parse("!(!has(a))")) == "!!has(a)"
    assert parse("!(!has(a))").evaluate({"a": "1"}) is True


# ---------------------------------------------------------------------------
# Strings, quotes, whitespace, label keys
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text,labels,expected",
    [
        ("a == 'x && y || z'", {"a": "x && y || z"}, True),
        ('a == "has(b) || !c"', {"a": "has(b) || !c"}, True),
        ("a == '(all())'", {"a": "(all())"}, True),
        ("a in {'a, b', '}', '{'}", {"a": "a, b"}, True),
        ("a in {'a, b', '}', '{'}", {"a": "}"}, True),
        ("a in {'a, b', '}', '{'}", {"a": "a"}, False),
        ("a == 'it''s'", {}, None),  # adjacent strings are not concatenation
        ('''a == "it's"''', {"a": "it's"}, True),
        ("""a == 'say "hi"'""", {"a": 'say "hi"'}, True),
        ("a == '  padded  '", {"a": "  padded  "}, True),
        ("a == '  padded  '", {"a": "padded"}, False),
        ("a == 'multi\nline'", {"a": "multi\nline"}, True),
        ("a == 'back\\slash'", {"a": "back\\slash"}, True),
        ("a == 'x\\'", {"a": "x\\"}, True),  # backslash is not an escape
        ("a == 'ünïcødé ✓'", {"a": "ünïcødé ✓"}, True),
        ("a == \"''')\\nimport os #\"", {"a": "''')\\nimport os #"}, True),
    ],
)
def test_string_literals(text, labels, expected):
    if expected is None:
        with pytest.raises(SelectorError):
            parse(text)
    else:
        assert matches(text, labels) is expected


def test_values_that_look_like_python_cannot_escape_generated_code():
    nasty = "'); __import__('os').system('false'); ('"
    sel = parse(f'a == "{nasty}" || b in {{"{nasty}", "x"}} || c contains "{nasty}"')
    assert sel.evaluate({"a": nasty})
    assert sel.evaluate({"b": nasty})
    assert sel.evaluate({"c": "<" + nasty + ">"})
    assert not sel.evaluate({"a": "x"})


@pytest.mark.parametrize(
    "text",
    [
        "a=='b'&&c!='d'||has(e)",
        "  a  ==  'b'  &&  c  !=  'd'  ||  has(  e  )  ",
        "\ta\t==\t'b'\t&&\tc\t!=\t'd'\t||\thas(\te\t)\t",
        "(a=='b')&&(c!='d')||(has(e))",
    ],
)
def test_whitespace_is_free_form(text):
    assert str(parse(text)) == '((a == "b" && c != "d") || has(e))'


def test_only_space_and_tab_are_whitespace_as_in_calico():
    for text in ("a == 'b'\n", "\na == 'b'", "a == 'b'\r\n", "a ==\n'b'"):
        with pytest.raises(SelectorError):
            parse(text)


@pytest.mark.parametrize(
    "text,canonical",
    [
        ("a startswith 'x'", 'a starts with "x"'),
        ("a endswith 'x'", 'a ends with "x"'),
        ("a notin {'x'}", 'a not in {"x"}'),
        ("a  not  in  {'x'}", 'a not in {"x"}'),
        ("a starts\twith 'x'", 'a starts with "x"'),
        ("a in{'x'}", 'a in {"x"}'),
        ("a contains'x'", 'a contains "x"'),
        ("a!='x'", 'a != "x"'),
        ("has(a)&&all()", "(has(a) && all())"),
        ("all( )", "all()"),
        ("global(\t)", "global()"),
    ],
)
def test_operator_spelling_variants(text, canonical):
    assert str(parse(text)) == canonical


@pytest.mark.parametrize(
    "key",
    [
        "projectcalico.org/namespace",
        "projectcalico.org/orchestrator",
        "app.kubernetes.io/name",
        "pcns.kubernetes.io/metadata.name",
        "a-b_c.d/e",
        "9lives",
        "A",
        "-",
        "x" * MAX_LABEL_LENGTH,
    ],
)
def test_label_key_characters(key):
    assert matches(f"{key} == 'v'", {key: "v"})
    assert matches(f"has({key})", {key: "v"})
    assert not matches(f"has({key})", {})


@pytest.mark.parametrize(
    "text,labels",
    [
        # Words that are keywords elsewhere are plain labels in label position.
        ("in == 'x'", {"in": "x"}),
        ("not == 'x'", {"not": "x"}),
        ("has == 'x'", {"has": "x"}),
        ("all == 'x'", {"all": "x"}),
        ("global == 'x'", {"global": "x"}),
        ("contains contains 'x'", {"contains": "axb"}),
        ("starts starts with 'x'", {"starts": "xy"}),
        ("in in {'x'}", {"in": "x"}),
    ],
)
def test_keywords_as_label_names(text, labels):
    assert matches(text, labels)


def test_label_key_too_long_is_rejected():
    key = "k" * (MAX_LABEL_LENGTH + 1)
    with pytest.raises(SelectorError) as info:
        parse(f"{key} == 'v'")
    assert info.value.position == 0
    assert "512" in info.value.reason
    with pytest.raises(SelectorError) as info:
        parse(f"a == 'b' && has({key})")
    assert info.value.position == len("a == 'b' && has(")


def test_set_literal_forms():
    assert str(parse("a in {}")) == "a in {}"
    assert str(parse("a not in { }")) == "a not in {}"
    assert str(parse("a in {'x',}")) == 'a in {"x"}'
    assert str(parse("a in {'x', 'y' , }")) == 'a in {"x", "y"}'


def test_works_with_any_mapping():
    class Labels(Mapping):
        def __init__(self, data):
            self._data = data

        def __getitem__(self, key):
            return self._data[key]

        def __iter__(self):
            return iter(self._data)

        def __len__(self):
            return len(self._data)

    text = "a == 'x' && has(b) && c not in {'q'} && d starts with 'p'"
    data = {"a": "x", "b": "", "d": "pq"}
    assert parse(text).evaluate(Labels(data))
    assert parse(text).evaluate(types.MappingProxyType(data))
    assert not parse(text).evaluate(Labels({}))


# ---------------------------------------------------------------------------
# Canonical form (Calico's String())
# ---------------------------------------------------------------------------

CANONICAL = [
    ("", "all()"),
    ("   ", "all()"),
    (" all() ", "all()"),
    (" (all() )", "all()"),
    ("global()", "global()"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
    ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")'),
    ("a == 'b'", 'a == "b"'),
    ("a == \"'\"", "a == \"'\""),
    ("a == '\"'", "a == '\"'"),
    ("a contains '\"'", "a contains '\"'"),
    ("a contains \"'\"", "a contains \"'\""),
    ("a startswith '\"'", "a starts with '\"'"),
    ("a endswith \"'\"", "a ends with \"'\""),
    ("a!='\"'", "a != '\"'"),
    ("a in {\"d\"}", 'a in {"d"}'),
    ("a in {\"d\", \"a\", \"b\"}", 'a in {"a", "b", "d"}'),
    ("a in {\"z\",\"a\",\"a\"}", 'a in {"a", "z"}'),
    ("a in {\"z\", \"z\", \"x\", \"y\", \"x\", \"a\"}", 'a in {"a", "x", "y", "z"}'),
    ("a not in {'b', \"'\", '\"'}", "a not in {'\"', \"'\", \"b\"}"),
    ("a in {'B', 'a', '_', '1'}", 'a in {"1", "B", "_", "a"}'),  # byte order
    ("(a == 'b')", 'a == "b"'),
    ("((((a == 'b'))))", 'a == "b"'),
    ("!(a == 'b')", '!a == "b"'),
    ("a == 'b' && c == 'd'", '(a == "b" && c == "d")'),
    ("a == 'b' || c == 'd'", '(a == "b" || c == "d")'),
    ("a == 'b' && c == 'd' && e == 'f'", '(a == "b" && c == "d" && e == "f")'),
    ("a == 'b' && (c == 'd' && e == 'f')", '(a == "b" && (c == "d" && e == "f"))'),
    ("projectcalico.org/namespace == 'prod' && role in {'db', 'cache'}",
     '(projectcalico.org/namespace == "prod" && role in {"cache", "db"})'),
    ("!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
     '!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})'),
]


@pytest.mark.parametrize("text,canonical", CANONICAL)
def test_canonical_form(text, canonical):
    sel = parse(text)
    assert str(sel) == canonical
    again = parse(canonical)
    assert str(again) == canonical
    assert again == sel and hash(again) == hash(sel)


def test_repr():
    assert repr(parse("a=='b'")) == "Selector('a == \"b\"')"


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

ERRORS = [
    # (text, position, fragment of the reason)
    ('"FOO', 0, "unterminated string"),
    ("'FOO", 0, "unterminated string"),
    ('"FOO\'', 0, "unterminated string"),
    ("a == 'b' && c == \"d", 17, "unterminated string"),
    ("a == ", 5, "expected a quoted value after '=='"),
    ("a ==", 4, "expected a quoted value after '=='"),
    ("a != ||", 5, "expected a quoted value after '!='"),
    ("b == b", 5, "found label 'b'"),
    ("b contains b", 11, "expected a quoted value after 'contains'"),
    ("b starts with b", 14, "expected a quoted value after 'starts with'"),
    ("b ends with b", 12, "expected a quoted value after 'ends with'"),
    ("'b1' == b", 0, "expected a label"),
    ("a = 'b'", 2, "expected '=='"),
    ("a & b", 2, "expected '&&'"),
    ("a == 'b' | c == 'd'", 9, "expected '||'"),
    ("foo == \"bar\" &", 13, "expected '&&'"),
    ("a ~= 'b'", 2, "expected an operator after label 'a'"),
    ("a b", 2, "expected an operator after label 'a'"),
    ("b", 1, "expected an operator after label 'b'"),
    ("a ", 2, "expected an operator after label 'a'"),
    ("a starts 'x'", 9, "expected 'with' after 'starts'"),
    ("a ends", 6, "expected 'with' after 'ends'"),
    ("a not 'x'", 6, "expected 'in' after 'not'"),
    ("%", 0, "unexpected character '%'"),
    ('a == "b" && %', 12, "unexpected character '%'"),
    ("a == 'b' && ü == 'c'", 12, "unexpected character"),
    ("a\n== 'b'", 1, "expected an operator after label 'a'"),
    ("a == 'b'\n", 8, "unexpected character"),
    ("!", 1, "expected a label"),
    ("has(foo) &&", 11, "expected a label"),
    ("has(foo) ||", 11, "expected a label"),
    ("&& has(a)", 0, "expected a label"),
    ("(", 1, "expected a label"),
    (")", 0, "expected a label"),
    ("()", 1, "expected a label"),
    ('(a == "foo"', 11, "expected ')'"),
    ("((a == 'b') || c == 'd'", 23, "expected ')' to close the '(' at position 0"),
    ("a == 'b')", 8, "expected '&&', '||' or end of selector"),
    ("a == 'b' c == 'd'", 9, "expected '&&', '||' or end of selector"),
    ("a == 'b' == 'c'", 9, "expected '&&', '||' or end of selector"),
    ("has(a) has(b)", 7, "expected '&&', '||' or end of selector"),
    ("a in 'x'", 5, "expected '{' after 'in'"),
    ("a not in 'x'", 9, "expected '{' after 'not in'"),
    ("a in {'x'", 9, "expected ',' or '}' in set"),
    ("a in {'x' 'y'}", 10, "expected ',' or '}' in set"),
    ("a in {,}", 6, "expected a quoted value or '}' in set"),
    ("a in {'x',,}", 10, "expected a quoted value or '}' in set"),
    ('foo in {"", ||', 12, "expected a quoted value or '}' in set"),
    ("a in {x}", 6, "expected a quoted value or '}' in set"),
    ("has(a", 5, "expected ')' after 'has(a'"),
    ("has(a b)", 6, "expected ')' after 'has(a'"),
    ("has()", 4, "expected a label name inside has(...)"),
    ("has('a')", 4, "expected a label name inside has(...)"),
    ("has (a)", 4, "expected an operator after label 'has'"),
    ("all(x)", 4, "expected ')' after 'all('"),
    ("global(", 7, "expected ')' after 'global('"),
    ("a == 'b' && has(c) && (d in {'e'} || !", 38, "expected a label"),
]


@pytest.mark.parametrize("text,position,reason", ERRORS)
def test_error_positions(text, position, reason):
    with pytest.raises(SelectorError) as info:
        parse(text)
    err = info.value
    assert err.position == position, str(err)
    assert reason in err.reason, str(err)
    assert err.text == text


def test_error_message_format():
    with pytest.raises(SelectorError) as info:
        parse("a == ")
    assert str(info.value) == (
        'invalid selector at position 5: expected a quoted value after \'==\', '
        'found end of selector in "a == "'
    )


def test_error_is_value_error_and_pickles():
    with pytest.raises(ValueError):
        parse("a ==")
    try:
        parse("a ==")
    except SelectorError as err:
        copy = pickle.loads(pickle.dumps(err))
        assert (copy.text, copy.position, copy.reason, str(copy)) == (
            err.text, err.position, err.reason, str(err))


def test_non_string_input_is_a_type_error():
    with pytest.raises(TypeError):
        parse_uncached(None)
    with pytest.raises(TypeError):
        parse(b"a == 'b'")


def test_nesting_limit():
    ok = "(" * MAX_NESTING + "has(a)" + ")" * MAX_NESTING
    assert parse(ok).evaluate({"a": ""})
    deep = "!(has(x) || " * MAX_NESTING + "has(a)" + ")" * MAX_NESTING
    assert parse(deep).evaluate({}) is (MAX_NESTING % 2 == 1)
    too_deep = "(" * (MAX_NESTING + 1) + "has(a)" + ")" * (MAX_NESTING + 1)
    with pytest.raises(SelectorError) as info:
        parse(too_deep)
    assert info.value.position == MAX_NESTING


# ---------------------------------------------------------------------------
# Selector object: identity, hashing, caching, pickling, labels_used
# ---------------------------------------------------------------------------

def test_equality_and_hash_follow_canonical_form():
    a = parse("a=='b' && has(c)")
    b = parse('  a == "b"   &&   has( c )')
    c = parse("has(c) && a == 'b'")
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    assert a != "(a == \"b\" && has(c))"
    assert parse("a in {'y','x','x'}") == parse("a in {'x','y'}")


def test_parse_is_cached_and_uncached_variant_is_not():
    text = "cache-me == 'please'"
    assert parse(text) is parse(text)
    assert parse_uncached(text) is not parse_uncached(text)
    assert parse_uncached(text) == parse(text)


def test_selector_pickles_by_canonical_form():
    sel = parse("a in {'x','y'} && !has(b)")
    copy = pickle.loads(pickle.dumps(sel))
    assert copy == sel
    assert copy.evaluate({"a": "x"}) and not copy.evaluate({"a": "x", "b": ""})


def test_labels_used():
    sel = parse("a == 'x' || !(has(b) && c not in {'q'}) || d contains 'z' || all()")
    assert sel.labels_used() == frozenset("abcd")
    assert parse("").labels_used() == frozenset()
    assert isinstance(sel, Selector)


# ---------------------------------------------------------------------------
# Randomised differential test against a straightforward interpreter
# ---------------------------------------------------------------------------

KEYS = ["a", "b", "projectcalico.org/namespace"]
VALUES = ["x", "y", "", "xy", "a b", "it's"]


def _q(rng, value):
    if "'" in value:
        return f'"{value}"'
    return rng.choice([f"'{value}'", f'"{value}"'])


def _random_leaf(rng):
    k = rng.choice(KEYS)
    v = rng.choice(VALUES)
    kind = rng.randrange(11)
    if kind == 0:
        return f"{k} == {_q(rng, v)}", lambda l: l.get(k) == v
    if kind == 1:
        return f"{k} != {_q(rng, v)}", lambda l: l.get(k) != v
    if kind in (2, 3):
        vals = rng.sample(VALUES, rng.randrange(4))
        items = ", ".join(_q(rng, x) for x in vals)
        if kind == 2:
            return f"{k} in {{{items}}}", lambda l: k in l and l[k] in vals
        return f"{k} not in {{{items}}}", lambda l: k not in l or l[k] not in vals
    if kind == 4:
        return f"has({k})", lambda l: k in l
    if kind == 5:
        return f"{k} contains {_q(rng, v)}", lambda l: k in l and v in l[k]
    if kind == 6:
        return f"{k} starts with {_q(rng, v)}", lambda l: k in l and l[k].startswith(v)
    if kind == 7:
        return f"{k} ends with {_q(rng, v)}", lambda l: k in l and l[k].endswith(v)
    if kind == 8:
        return "all()", lambda l: True
    if kind == 9:
        return "global()", lambda l: True
    return f"!has({k})", lambda l: k not in l


def _random_expr(rng, depth):
    if depth == 0 or rng.random() < 0.3:
        return _random_leaf(rng)
    left_text, left = _random_expr(rng, depth - 1)
    right_text, right = _random_expr(rng, depth - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return f"({left_text}) && ({right_text})", lambda l: left(l) and right(l)
    if kind == 1:
        return f"({left_text})||({right_text})", lambda l: left(l) or right(l)
    return f"!({left_text})", lambda l: not left(l)


def _random_labels(rng):
    return {k: rng.choice(VALUES) for k in KEYS if rng.random() < 0.6}


def test_random_selectors_match_reference_interpreter():
    rng = random.Random(20240611)
    label_sets = [_random_labels(rng) for _ in range(40)]
    for _ in range(400):
        text, reference = _random_expr(rng, 4)
        sel = parse_uncached(text)
        canonical = parse_uncached(str(sel))
        for labels in label_sets:
            expected = bool(reference(labels))
            assert sel.evaluate(labels) is expected, (text, labels)
            assert canonical.evaluate(labels) is expected, (str(sel), labels)
