"""ClusterInformation and KubeControllersConfiguration
(``api/pkg/apis/projectcalico/v3/clusterinfo.go``, ``kubecontrollersconfig.go``)."""

from __future__ import annotations

from pycalico.core.resources.base import Many, each, field, model
from pycalico.core.resources.meta import Resource
from pycalico.core.resources.types import (
    Duration,
    check_cidr,
    check_duration,
    check_name,
    check_regexp,
    check_selector,
    label_problems,
)
from pycalico.core.schema import in_range, one_of, validated

ENABLED = one_of("Enabled", "Disabled")
DURATION = validated(check_duration)


@model
class ClusterInformationSpec:
    cluster_guid: str | None = field(key="clusterGUID")
    cluster_type: str | None = field()
    calico_version: str | None = field()
    datastore_ready: bool | None = field()
    variant: str | None = field()


@model
class ClusterInformation(Resource):
    """Written by calico-node (calicoctl refuses to apply it); ``default`` is the one instance."""

    KIND = "ClusterInformation"
    PLURAL = "clusterinformations"

    spec: ClusterInformationSpec = field(factory=ClusterInformationSpec)


@model
class Template:
    """How the node controller names and labels automatic host endpoints."""

    generate_name: str | None = field(validated(check_name))
    interface_cidrs: tuple[str, ...] | None = field(each(check_cidr), key="interfaceCIDRs")
    interface_pattern: str | None = field(validated(check_regexp))
    labels: dict[str, str] | None = field(Many(label_problems))
    node_selector: str | None = field(validated(check_selector))


@model
class AutoHostEndpointConfig:
    auto_create: str | None = field(ENABLED)
    create_default_host_endpoint: str | None = field(ENABLED)
    templates: tuple[Template, ...] | None = field()


@model
class NodeControllerConfig:
    reconciler_period: Duration | None = field(DURATION)
    sync_labels: str | None = field(ENABLED)
    host_endpoint: AutoHostEndpointConfig | None = field()
    leak_grace_period: Duration | None = field(DURATION)


@model
class ReconcilerConfig:
    """The policy, workloadEndpoint, serviceAccount and namespace controllers' settings."""

    reconciler_period: Duration | None = field(DURATION)


@model
class LoadBalancerControllerConfig:
    assign_ips: str | None = field(one_of("AllServices", "RequestedServicesOnly"), key="assignIPs")


@model
class MigrationControllerConfig:
    enabled: str | None = field(ENABLED)


@model
class ControllersConfig:
    node: NodeControllerConfig | None = field()
    policy: ReconcilerConfig | None = field()
    workload_endpoint: ReconcilerConfig | None = field()
    service_account: ReconcilerConfig | None = field()
    namespace: ReconcilerConfig | None = field()
    load_balancer: LoadBalancerControllerConfig | None = field()
    policy_migration: MigrationControllerConfig | None = field()


@model
class KubeControllersConfigurationSpec:
    log_severity_screen: str | None = field(one_of("None", "Debug", "Info", "Warning", "Error", "Fatal", "Panic"))
    health_checks: str | None = field(ENABLED)
    etcd_v3_compaction_period: Duration | None = field(DURATION)
    prometheus_metrics_port: int | None = field(in_range(0, 65535))
    controllers: ControllersConfig | None = field()
    debug_profile_port: int | None = field(in_range(0, 65535))


@model
class KubeControllersConfigurationStatus:
    running_config: KubeControllersConfigurationSpec | None = field()
    environment_vars: dict[str, str] | None = field()


@model
class KubeControllersConfiguration(Resource):
    KIND = "KubeControllersConfiguration"
    PLURAL = "kubecontrollersconfigurations"

    spec: KubeControllersConfigurationSpec = field(factory=KubeControllersConfigurationSpec)
    status: KubeControllersConfigurationStatus | None = field()
