"""The selector rewrites Calico applies between the v3 API and Felix.

From ``libcalico-go/lib/backend/syncersv1/updateprocessors/`` (networkpolicyprocessor.go,
globalnetworkpolicyprocessor.go, rules.go, selectors.go):

* a NetworkPolicy selects ``(<selector>) && projectcalico.org/namespace == '<ns>'``;
* a namespace selector's labels get the ``pcns.`` prefix (the namespace profile's labels),
  a service account selector's the ``pcsa.`` prefix;
* in a rule's namespaceSelector ``all()`` becomes ``has(projectcalico.org/namespace)`` and
  ``global()`` becomes ``!has(projectcalico.org/namespace)``, as plain text replacements on
  the prefixed selector, exactly as Calico does them;
* a rule of a namespaced policy is limited to the policy's namespace as soon as it uses any
  of selector, notSelector or serviceAccounts (unless it has a namespaceSelector).

Every function returns Calico's *text* (before canonicalisation) or ``""`` for "no selector";
:func:`canonical` gives the canonical form that IP set ids hash.
"""

from __future__ import annotations

import copy
import functools

from pycalico.core.selector import Selector, parse

NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
NAMESPACE_PREFIX = "pcns."
SERVICE_ACCOUNT_PREFIX = "pcsa."
ALL = "all()"


@functools.lru_cache(maxsize=16384)
def canonical(text: str) -> str:
    """Calico's canonical string of a selector ("" is ``all()``)."""
    return str(parse(text))


def _prefix_tree(node, prefix: str) -> None:
    # Calico's PrefixVisitor renames the label of every label test (==, !=, contains,
    # starts with, ends with, has, in, not in); all() and global() have none.
    if hasattr(node, "label"):
        node.label = prefix + node.label
    operand = getattr(node, "operand", None)
    if operand is not None:
        _prefix_tree(operand, prefix)
    for child in getattr(node, "operands", ()):
        _prefix_tree(child, prefix)


@functools.lru_cache(maxsize=4096)
def with_prefix(text: str, prefix: str) -> str:
    """``text`` with ``prefix`` put before every label name, in canonical form.

    Calico's ``parseSelectorAttachPrefix``. :mod:`pycalico.core.selector` has no public
    visitor, so this walks a copy of the parsed tree.
    """
    root = copy.deepcopy(parse(text)._root)  # private: see the docstring
    _prefix_tree(root, prefix)
    return str(Selector(root))


def _prefix_and_append(current: str, new: str, prefix: str) -> str:
    if not new:
        return current
    prefixed = with_prefix(new, prefix)
    if not prefixed:
        return current
    return f"({current}) && {prefixed}" if current else prefixed


def network_policy_selector(selector: str | None, namespace: str, service_account_selector: str | None) -> str:
    """The endpoint selector of a NetworkPolicy as Felix receives it."""
    ns_sel = f"{NAMESPACE_LABEL} == '{namespace}'"
    sel = f"({selector}) && {ns_sel}" if selector else ns_sel
    return _prefix_and_append(sel, service_account_selector or "", SERVICE_ACCOUNT_PREFIX)


def global_policy_selector(
    selector: str | None, namespace_selector: str | None, service_account_selector: str | None
) -> str:
    """The endpoint selector of a GlobalNetworkPolicy as Felix receives it."""
    sel = selector or ""
    if namespace_selector:
        sel = _prefix_and_append(sel, namespace_selector, NAMESPACE_PREFIX)
        sel = sel.replace(ALL, f"has({NAMESPACE_LABEL})")
    if service_account_selector:
        sel = _prefix_and_append(sel, service_account_selector, SERVICE_ACCOUNT_PREFIX)
        sel = sel.replace(ALL, f"has({SERVICE_ACCOUNT_LABEL})")
    return sel


def service_accounts_selector(names: tuple[str, ...] | None, selector: str | None) -> str:
    """A rule's ``serviceAccounts`` match as a selector (Calico's ``parseServiceAccounts``)."""
    updated = with_prefix(selector, SERVICE_ACCOUNT_PREFIX) if selector else ""
    if not names:
        return updated
    joined = "', '".join(names)
    by_name = canonical(f"{SERVICE_ACCOUNT_LABEL} in {{ '{joined}' }}")
    return f"({updated}) && ({by_name})" if updated else by_name


def entity_selector(
    namespace_selector: str | None,
    selector: str | None,
    service_account_selector: str,
    not_selector: str | None,
    namespace: str,
) -> str:
    """The positive selector of one side of a rule (Calico's ``getEndpointSelector``)."""
    if namespace_selector:
        ns_sel = with_prefix(namespace_selector, NAMESPACE_PREFIX)
        ns_sel = ns_sel.replace(ALL, f"has({NAMESPACE_LABEL})")
        ns_sel = ns_sel.replace("global()", f"!has({NAMESPACE_LABEL})")
    elif namespace:
        ns_sel = f"{NAMESPACE_LABEL} == '{namespace}'"
    else:
        ns_sel = ""
    parts = [p for p in (service_account_selector, selector or "") if p]
    if len(parts) == 2:
        sel = "(" + ") && (".join(parts) + ")"
    else:
        sel = parts[0] if parts else ""
    if ns_sel and (sel or not_selector or namespace_selector):
        sel = f"({ns_sel}) && ({sel})" if sel else ns_sel
    return sel


def combine_negation(positive: str, negated: str) -> tuple[str, str]:
    """Fold a notSelector into the positive selector when there is one (``combineMatchesIfPossible``).

    Only valid when a positive selector limits the rule to known endpoints anyway; without
    one the negation must stay separate, as it must also match addresses outside the cluster.
    """
    if positive and negated:
        return f"({positive}) && (!({negated}))", ""
    return positive, negated
