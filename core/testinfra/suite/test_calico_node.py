"""The checks of one Calico node, one test each (see docs/testinfra.md).

Every failure names the node and says what differs; a check that does not apply to
the node (BGP on a VXLAN node) is skipped with the reason.
"""

from __future__ import annotations

import pytest

from pycalico.testinfra import checks
from pycalico.testinfra.view import NodeView, NotApplicable, Unavailable


def judge(node: NodeView, check) -> None:
    try:
        problems = check(node)
    except NotApplicable as exc:
        pytest.skip(f"{node.name}: {exc}")
    except Unavailable as exc:
        pytest.fail(f"{node.name}: {exc}", pytrace=False)
    if problems:
        pytest.fail("\n".join(f"{node.name}: {p}" for p in problems), pytrace=False)


def test_calico_node_running_and_ready(calico_node):
    judge(calico_node, checks.running)


def test_config_valid(calico_node):
    judge(calico_node, checks.config_valid)


def test_cni_files(calico_node):
    judge(calico_node, checks.cni)


def test_bgp_sessions(calico_node):
    judge(calico_node, checks.bgp)


def test_routes_to_remote_blocks(calico_node):
    judge(calico_node, checks.remote_routes)


def test_vxlan_device(calico_node):
    judge(calico_node, checks.vxlan_device)


def test_policy_dataplane(calico_node):
    judge(calico_node, checks.policy)


def test_ipam_check_clean(calico_node):
    judge(calico_node, checks.ipam)
