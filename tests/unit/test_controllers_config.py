"""calico-kube-controllers' configuration: KubeControllersConfiguration merged with
Calico's environment variables (runconfig.go), its status, the status file and
check-status."""

from __future__ import annotations

import json

import attrs
import pytest

from pycalico.core.config import ConfigError
from pycalico.core.controllers import config as kc
from pycalico.core.controllers import status as st
from pycalico.core.resources.cluster import NodeControllerConfig
from pycalico.core.resources.codec import from_dict, to_dict


def spec_with(**controllers):
    default = kc.default_configuration()
    spec = default.spec
    return attrs.evolve(spec, controllers=attrs.evolve(spec.controllers, **controllers))


def test_defaults_are_calicos():
    doc = to_dict(kc.default_configuration())
    assert doc["metadata"] == {"name": "default"}
    assert doc["spec"] == {
        "logSeverityScreen": "Info",
        "healthChecks": "Enabled",
        "etcdV3CompactionPeriod": "10m0s",
        "controllers": {
            "node": {"reconcilerPeriod": "5m0s", "syncLabels": "Enabled",
                     "hostEndpoint": {"autoCreate": "Disabled", "createDefaultHostEndpoint": "Enabled"},
                     "leakGracePeriod": "15m0s"},
            "policy": {"reconcilerPeriod": "5m0s"},
            "workloadEndpoint": {"reconcilerPeriod": "5m0s"},
            "serviceAccount": {"reconcilerPeriod": "5m0s"},
            "namespace": {"reconcilerPeriod": "5m0s"},
            "loadBalancer": {"assignIPs": "AllServices"},
        },
    }
    # What calicoctl would accept: the defaults pass Calico's validation.
    from_dict(doc)


def test_default_merge_in_etcd_mode():
    run, status = kc.merge({}, "etcdv3", kc.default_configuration().spec)
    assert run.enabled() == ["node", "policy", "workload_endpoint", "service_account", "namespace", "load_balancer"]
    assert run.node == kc.NodeSettings(sync_labels=True, auto_host_endpoints=False, delete_nodes=True,
                                       leak_grace_period=900.0)
    assert run.policy == kc.SyncSettings(300.0)
    assert (run.log_level, run.compaction_period, run.health_enabled) == ("info", 600.0, True)
    running = to_dict(status.running_config)
    # Calico's status leaves the node's reconcilerPeriod out (the node controller has none).
    assert running["controllers"]["node"] == {
        "syncLabels": "Enabled", "leakGracePeriod": "15m0s",
        "hostEndpoint": {"autoCreate": "Disabled", "createDefaultHostEndpoint": "Enabled"}}
    assert running["logSeverityScreen"] == "Info"
    assert running["etcdV3CompactionPeriod"] == "10m0s"
    assert running["healthChecks"] == "Enabled"
    assert status.environment_vars == {}


def test_kubernetes_datastore_neither_syncs_labels_nor_deletes_nodes():
    run, status = kc.merge({"SYNC_NODE_LABELS": "true"}, "kubernetes", kc.default_configuration().spec)
    assert run.node.sync_labels is False and run.node.delete_nodes is False
    assert status.environment_vars == {"DATASTORE_TYPE": "kubernetes"}
    assert status.running_config.controllers.node.sync_labels == "Disabled"


def test_environment_overrides_as_calico_merges_it():
    env = {"ENABLED_CONTROLLERS": "node,profile,policy", "LOG_LEVEL": "warn", "RECONCILER_PERIOD": "30s",
           "COMPACTION_PERIOD": "0", "HEALTH_ENABLED": "false", "SYNC_NODE_LABELS": "false",
           "AUTO_HOST_ENDPOINTS": "enabled", "UNRELATED": "x"}
    run, status = kc.merge(env, "etcdv3", kc.default_configuration().spec)
    assert run.enabled() == ["node", "policy", "namespace"]
    assert run.namespace == run.policy == kc.SyncSettings(30.0)
    assert (run.log_level, run.compaction_period, run.health_enabled) == ("warning", 0.0, False)
    assert run.node.sync_labels is False and run.node.auto_host_endpoints is True
    assert run.node.leak_grace_period == 900.0  # no variable for it: always the resource's
    assert status.environment_vars == {k: v for k, v in env.items() if k != "UNRELATED"}
    running = to_dict(status.running_config)
    assert running["logSeverityScreen"] == "Warning"
    assert running["controllers"]["policy"] == {"reconcilerPeriod": "30s"}
    assert "serviceAccount" not in running["controllers"]


def test_controllers_follow_the_resource_without_the_variable():
    spec = spec_with(policy=None, service_account=None, workload_endpoint=None, load_balancer=None,
                     node=NodeControllerConfig(leak_grace_period="0s"))
    run, _ = kc.merge({}, "etcdv3", spec)
    assert run.enabled() == ["node", "namespace"]
    assert run.node.leak_grace_period == 0.0
    assert run.node.sync_labels is True  # unset means Enabled


@pytest.mark.parametrize("env, text", [
    ({"ENABLED_CONTROLLERS": "node,pods"}, ("ENABLED_CONTROLLERS='node,pods': invalid environment variable value: "
                                            "Invalid controller 'pods' provided.")),
    ({"ENABLED_CONTROLLERS": "flannelmigration"}, "flannelmigration controller is not supported"),
    ({"RECONCILER_PERIOD": "5 min"}, ("RECONCILER_PERIOD='5 min': invalid environment variable value: '5 min' is not "
                                      "a duration")),
    ({"HEALTH_ENABLED": "yes"}, "HEALTH_ENABLED='yes': invalid environment variable value: expected true or false"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud'"),
    ({"AUTO_HOST_ENDPOINTS": "on"}, "AUTO_HOST_ENDPOINTS='on'"),
])
def test_a_bad_variable_is_named(env, text):
    with pytest.raises(ConfigError) as err:
        kc.merge(env, "etcdv3", kc.default_configuration().spec)
    assert text in str(err.value)


def test_a_bad_field_of_the_resource_is_named():
    doc = to_dict(kc.default_configuration())
    doc["spec"]["controllers"]["node"]["leakGracePeriod"] = "15 min"
    doc["spec"]["healthChecks"] = "On"
    stored = from_dict(doc, defaults=False, validate=False)  # as a datastore reads it
    assert kc.spec_problems(stored) == [
        "KubeControllersConfiguration default: spec.healthChecks: must be one of Enabled, Disabled, got 'On'",
        ("KubeControllersConfiguration default: spec.controllers.node.leakGracePeriod: '15 min' is not a duration "
         "(use a number and unit, e.g. '90s', '1m30s', '250ms')"),
    ]
    assert kc.spec_problems(kc.default_configuration()) == []


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (300, "5m0s"), (900, "15m0s"), (3600, "1h0m0s"),
                                           (1.5, "1.5s"), (0.25, "250ms"), (5400.5, "1h30m0.5s"), (-2, "-2s")])
def test_go_duration(seconds, text):
    assert kc.go_duration(seconds) == text


def test_status_file_and_check_status(tmp_path, capsys):
    path = tmp_path / "status" / "status.json"
    assert st.check_main(["-r", "-f", str(path)]) == 1
    assert capsys.readouterr().out.startswith(f"Failed to read status file {path}: ")
    status = st.Status(path)
    status.set_ready(st.STARTUP, True)
    status.set_ready(st.DATASTORE, False, "Error verifying datastore: etcd unreachable")
    status.set_ready(st.APISERVER, False, "Error reaching apiserver: refused")
    assert json.loads(path.read_text()) == {"Readiness": {
        "Startup": {"Ready": True, "Reason": ""},
        "CalicoDatastore": {"Ready": False, "Reason": "Error verifying datastore: etcd unreachable"},
        "KubeAPIServer": {"Ready": False, "Reason": "Error reaching apiserver: refused"}}}
    assert st.check_main(["-l", "-f", str(path)]) == 1
    assert capsys.readouterr().out == "Error verifying datastore: etcd unreachable; Error reaching apiserver: refused\n"
    status.set_ready(st.DATASTORE, True)
    status.set_ready(st.APISERVER, True)
    assert status.ready()
    assert st.check_main(["-r", "-f", str(path)]) == 0
    assert capsys.readouterr().out == "Ready\n"
    assert st.check_main(["-f", str(path)]) == 1
    assert capsys.readouterr().out == "No command specified to check-status\n"
