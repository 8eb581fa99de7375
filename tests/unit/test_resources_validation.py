"""Calico's validation of the v3 resources: each rule refuses a bad manifest at its path."""

from __future__ import annotations

import pytest

from pycalico.core.resources import ResourceError, from_dict, load_resources

V3 = "projectcalico.org/v3"


def res(kind: str, spec: dict | None = None, name: str = "x", **meta) -> dict:
    doc = {"apiVersion": V3, "kind": kind, "metadata": {"name": name, **meta}}
    if spec is not None:
        doc["spec"] = spec
    return doc


def errors(doc: dict) -> list[str]:
    with pytest.raises(ResourceError) as err:
        from_dict(doc)
    return err.value.lines


def rule(**fields) -> dict:
    return res("GlobalNetworkPolicy", {"ingress": [{"action": "Allow", **fields}]}, name="p")


R = 'GlobalNetworkPolicy "p": spec.ingress[0]'

CASES = [
    # --- IPPool ---
    (
        res("IPPool", {"cidr": "10.0.0.0/16", "blockSize": 33}, "pool1"),
        'IPPool "pool1": spec.blockSize: must be between 20 and 32 for IPv4, got 33',
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/16", "blockSize": 19}, "pool1"),
        'IPPool "pool1": spec.blockSize: must be between 20 and 32 for IPv4, got 19',
    ),
    (
        res("IPPool", {"cidr": "fd00::/48", "blockSize": 115}, "pool1"),
        'IPPool "pool1": spec.blockSize: must be between 116 and 128 for IPv6, got 115',
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/28"}, "pool1"),
        'IPPool "pool1": spec.cidr: pool /28 is smaller than its blocks (/26): '
        "the prefix length must be at most the block size",
    ),
    (
        res("IPPool", {"cidr": "10.0.0.1/16"}, "pool1"),
        "IPPool \"pool1\": spec.cidr: '10.0.0.1/16' is not strictly masked (the network is 10.0.0.0/16)",
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/33"}, "pool1"),
        "IPPool \"pool1\": spec.cidr: '10.0.0.0/33' is not a valid CIDR: prefix length 33 is too long for IPv4",
    ),
    (res("IPPool", {"cidr": "10.0.0.0/1x"}, "pool1"), "IPPool \"pool1\": spec.cidr: '10.0.0.0/1x' is not a valid CIDR"),
    (res("IPPool", {}, "pool1"), 'IPPool "pool1": spec.cidr: is required'),
    (
        res("IPPool", {"cidr": "169.254.0.0/24", "blockSize": 26}, "pool1"),
        'IPPool "pool1": spec.cidr: 169.254.0.0/24 overlaps with the IPv4 link local range 169.254.0.0/16',
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/16", "ipipMode": "Always", "vxlanMode": "CrossSubnet"}, "pool1"),
        'IPPool "pool1": spec.vxlanMode: cannot enable both VXLAN and IPIP on the same IPPool',
    ),
    (
        res("IPPool", {"cidr": "fd00::/48", "ipipMode": "CrossSubnet"}, "pool1"),
        'IPPool "pool1": spec.ipipMode: IPIP is not supported on an IPv6 IP pool',
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/16", "ipipMode": "always"}, "pool1"),
        "IPPool \"pool1\": spec.ipipMode: must be one of Always, CrossSubnet, Never, got 'always'",
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/16", "vxlanMode": "Sometimes"}, "pool1"),
        "IPPool \"pool1\": spec.vxlanMode: must be one of Always, CrossSubnet, Never, got 'Sometimes'",
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/16", "allowedUses": ["Workload", "Pods"]}, "pool1"),
        "IPPool \"pool1\": spec.allowedUses[1]: must be one of Workload, Tunnel, LoadBalancer, got 'Pods'",
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/16", "allowedUses": ["LoadBalancer", "Tunnel"]}, "pool1"),
        'IPPool "pool1": spec.allowedUses: LoadBalancer cannot be used at the same time as Tunnel',
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/16", "assignmentMode": "Auto"}, "pool1"),
        "IPPool \"pool1\": spec.assignmentMode: must be one of Automatic, Manual, got 'Auto'",
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/16", "nodeSelector": "a = b"}, "pool1"),
        "IPPool \"pool1\": spec.nodeSelector: invalid selector at position 2: expected '==', found a single '=' in \"a = b\"",
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/16", "ipip": {"enabled": True}}, "pool1"),
        'IPPool "pool1": spec.ipip: is an APIv1 field and must not be set; use ipipMode',
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/16", "blockSize": "26"}, "pool1"),
        "IPPool \"pool1\": spec.blockSize: expected an integer, got a string '26'",
    ),
    # --- names, metadata ---
    (
        res("IPPool", {"cidr": "10.0.0.0/16"}, "Pool_1"),
        "IPPool \"Pool_1\": metadata.name: 'Pool_1' is not a valid name: use lower case alphanumeric characters, "
        "'-' or '.', starting and ending with an alphanumeric character",
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/16"}, "a" * 254),
        f'IPPool "{"a" * 254}": metadata.name: name is too long by 1 characters (at most 253)',
    ),
    (
        {"apiVersion": V3, "kind": "IPPool", "metadata": {}, "spec": {"cidr": "10.0.0.0/16"}},
        "IPPool (no name): metadata.name: is required",
    ),
    (
        res("GlobalNetworkPolicy", {}, "a.b.c"),
        "GlobalNetworkPolicy \"a.b.c\": metadata.name: 'a.b.c' is not a valid policy name: "
        "use lower case alphanumeric characters or '-', with at most one '.'",
    ),
    (
        res("NetworkPolicy", {}, "x.y.z", namespace="ns"),
        "NetworkPolicy \"ns/x.y.z\": metadata.name: 'x.y.z' is not a valid policy name: "
        "use lower case alphanumeric characters or '-', with at most one '.'",
    ),
    (
        res("Tier", {"order": 10}, "sec.ops"),
        "Tier \"sec.ops\": metadata.name: 'sec.ops' is not a valid tier name: use lower case alphanumeric characters or '-' (no '.')",
    ),
    (res("Tier", {"order": 10}, "default"), 'Tier "default": spec.order: the default tier\'s order must be 1000000'),
    (
        res("Tier", {"order": 10, "defaultAction": "Allow"}, "t"),
        "Tier \"t\": spec.defaultAction: must be one of Deny, Pass, got 'Allow'",
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/16"}, "p", namespace="default"),
        'IPPool "default/p": metadata.namespace: must not be set: IPPool is not namespaced',
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/16"}, "p", labels={"app": "web server"}),
        "IPPool \"p\": metadata.labels.app: label value 'web server' must be empty or consist of alphanumeric "
        "characters, '-', '_' or '.', starting and ending with an alphanumeric character",
    ),
    (
        res("IPPool", {"cidr": "10.0.0.0/16"}, "p", labels={"-bad": "v"}),
        "IPPool \"p\": metadata.labels.-bad: '-bad': the name part must consist of alphanumeric characters, "
        "'-', '_' or '.', starting and ending with an alphanumeric character",
    ),
    (
        res("NetworkSet", {"nets": ["10.0.0.0/8"]}, "s", namespace="a", labels={"projectcalico.org/namespace": "a"}),
        'NetworkSet "a/s": metadata.labels.projectcalico.org/namespace: projectcalico.org/namespace is not a valid label name',
    ),
    (
        {
            "apiVersion": "projectcalico.org/v2",
            "kind": "IPPool",
            "metadata": {"name": "p"},
            "spec": {"cidr": "10.0.0.0/16"},
        },
        "IPPool \"p\": apiVersion: must be projectcalico.org/v3 or crd.projectcalico.org/v1, got 'projectcalico.org/v2'",
    ),
    (
        {"kind": "IPPool", "metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/16"}},
        'IPPool "p": apiVersion: is required (projectcalico.org/v3 or crd.projectcalico.org/v1)',
    ),
    (
        {"apiVersion": V3, "kind": "WorkloadEndpoint", "metadata": {"name": "w"}, "spec": {"interfaceName": "cali1"}}
        | {"apiVersion": "crd.projectcalico.org/v1"},
        "WorkloadEndpoint \"w\": apiVersion: must be projectcalico.org/v3, got 'crd.projectcalico.org/v1'",
    ),
    # --- rules ---
    (rule(action="Accept"), f"{R}.action: must be one of Allow, Deny, Log, Pass, got 'Accept'"),
    (res("GlobalNetworkPolicy", {"ingress": [{"protocol": "TCP"}]}, name="p"), f"{R}.action: is required"),
    (
        rule(destination={"ports": [80]}),
        f"{R}.destination.ports: rules that specify ports must set protocol to TCP or UDP or SCTP",
    ),
    (
        rule(protocol="ICMP", source={"notPorts": ["http"]}),
        f"{R}.source.notPorts: rules that specify ports must set protocol to TCP or UDP or SCTP",
    ),
    (
        rule(protocol="TCP", destination={"ports": [0]}),
        f"{R}.destination.ports[0]: port number must be between 1 and 65535, got 0",
    ),
    (
        rule(protocol="TCP", destination={"ports": [65536]}),
        f"{R}.destination.ports[0]: port number must be between 1 and 65535, got 65536",
    ),
    (
        rule(protocol="UDP", destination={"ports": ["90:80"]}),
        f"{R}.destination.ports[0]: port range '90:80': minimum 90 is greater than maximum 80",
    ),
    (
        rule(protocol="UDP", destination={"ports": ["no way"]}),
        f"{R}.destination.ports[0]: 'no way' is not a port number, 'min:max' range or valid port name",
    ),
    (
        rule(protocol="UDP", destination={"ports": [True]}),
        f"{R}.destination.ports[0]: expected a port number, 'min:max' range or port name, got a boolean True",
    ),
    (
        rule(protocol="tcp"),
        f"{R}.protocol: protocol name 'tcp' is invalid; use one of TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255",
    ),
    (rule(protocol=256), f"{R}.protocol: protocol number must be between 1 and 255, got 256"),
    (rule(notProtocol=0), f"{R}.notProtocol: protocol number must be between 1 and 255, got 0"),
    (rule(protocol="ICMP", icmp={"type": 255}), f"{R}.icmp.type: must be between 0 and 254, got 255"),
    (rule(protocol="ICMP", icmp={"type": 3, "code": 256}), f"{R}.icmp.code: must be between 0 and 255, got 256"),
    (rule(protocol="ICMPv6", notICMP={"code": 1}), f"{R}.notICMP.code: ICMP code specified without an ICMP type"),
    (
        rule(protocol="TCP", icmp={"type": 8}),
        f"{R}.icmp: rules that specify ICMP fields must set protocol to ICMP or ICMPv6",
    ),
    (rule(protocol="ICMP", ipVersion=6), f"{R}.ipVersion: must be 4 with protocol ICMP"),
    (rule(notProtocol="ICMPv6", ipVersion=4), f"{R}.ipVersion: must be 6 with protocol ICMPv6"),
    (rule(ipVersion=5), f"{R}.ipVersion: must be 4 or 6, got 5"),
    (
        rule(ipVersion=6, source={"nets": ["10.0.0.0/8"]}),
        f"{R}.source.nets: rule IP version doesn't match CIDR version",
    ),
    (
        rule(source={"nets": ["10.0.0.0/8"]}, destination={"notNets": ["fd00::/8"]}),
        f"{R}.destination.notNets: rule contains both IPv4 and IPv6 CIDRs",
    ),
    (
        rule(source={"nets": ["10.0.0.1/8"]}),
        f"{R}.source.nets[0]: '10.0.0.1/8' is not strictly masked (the network is 10.0.0.0/8)",
    ),
    (
        rule(source={"selector": "app == 'a"}),
        f'{R}.source.selector: invalid selector at position 7: unterminated string in "app == \'a"',
    ),
    (
        rule(source={"selector": "global()"}),
        f"{R}.source.selector: global() can only be used in an EntityRule namespaceSelector",
    ),
    (
        rule(source={"namespaceSelector": "global() && a == 'b'"}),
        f"{R}.source.namespaceSelector: global() cannot be combined with other selectors",
    ),
    (
        rule(source={"services": {"name": "web", "namespace": "n"}, "selector": "a == 'b'"}),
        f"{R}.source.services: cannot specify selector/notSelector and services on the same rule",
    ),
    (rule(action="Deny", http={"methods": ["GET"]}), f"{R}.http: only valid for Allow rules"),
    (
        rule(protocol="UDP", http={"paths": [{"prefix": "/b"}]}),
        f"{R}.protocol: rules that specify HTTP fields must set protocol to TCP or leave it empty",
    ),
    (
        rule(http={"paths": [{"exact": "/a", "prefix": "/b"}]}),
        f"{R}.http.paths[0]: both 'exact' and 'prefix' are set; use one",
    ),
    (
        rule(http={"paths": [{"prefix": "api"}]}),
        f"{R}.http.paths[0].prefix: invalid path 'api': must start with '/' and not contain '?', '#' or spaces",
    ),
    (
        rule(metadata={"annotations": {"bad key!": "x"}}),
        f"{R}.metadata.annotations.bad key!: 'bad key!': the name part must consist of alphanumeric characters, "
        "'-', '_' or '.', starting and ending with an alphanumeric character",
    ),
    # --- policies ---
    (
        res("GlobalNetworkPolicy", {"selector": "global()"}, "p"),
        'GlobalNetworkPolicy "p": spec.selector: global() can only be used in an EntityRule namespaceSelector',
    ),
    (
        res("GlobalNetworkPolicy", {"types": ["Ingress", "Ingress"]}, "p"),
        "GlobalNetworkPolicy \"p\": spec.types: 'Ingress' type specified more than once",
    ),
    (
        res("GlobalNetworkPolicy", {"types": ["Inbound"]}, "p"),
        "GlobalNetworkPolicy \"p\": spec.types[0]: must be one of Ingress, Egress, got 'Inbound'",
    ),
    (
        res(
            "GlobalNetworkPolicy",
            {"preDNAT": True, "applyOnForward": True, "types": ["Ingress"], "egress": [{"action": "Allow"}]},
            "p",
        ),
        'GlobalNetworkPolicy "p": spec.egress: a preDNAT policy cannot have egress rules',
    ),
    (
        res("GlobalNetworkPolicy", {"doNotTrack": True}, "p"),
        'GlobalNetworkPolicy "p": spec.applyOnForward: must be true if either preDNAT or doNotTrack is true',
    ),
    (
        res(
            "GlobalNetworkPolicy",
            {"egress": [{"action": "Allow", "destination": {"services": {"name": "kube-dns"}}}]},
            "p",
        ),
        'GlobalNetworkPolicy "p": spec.egress[0].destination.services.namespace: must specify a namespace',
    ),
    (
        res(
            "NetworkPolicy",
            {"ingress": [{"action": "Allow", "destination": {"services": {"name": "db"}}}]},
            "p",
            namespace="n",
        ),
        'NetworkPolicy "n/p": spec.ingress[0].destination.services: not allowed in ingress rule destination',
    ),
    (
        res("NetworkPolicy", {"egress": [{"action": "Allow", "http": {"methods": ["GET"]}}]}, "p", namespace="n"),
        'NetworkPolicy "n/p": spec.egress[0].http: not allowed in egress rules',
    ),
    (
        res("NetworkPolicy", {"performanceHints": ["Fast"]}, "p", namespace="n"),
        "NetworkPolicy \"n/p\": spec.performanceHints[0]: must be one of AssumeNeededOnEveryNode, got 'Fast'",
    ),
    (
        res("Profile", {"labelsToApply": {"a/b/c": "x"}}, "prof"),
        "Profile \"prof\": spec.labelsToApply.a/b/c: 'a/b/c': prefix 'a/b' must be a DNS subdomain (lower case, digits, '-', '.')",
    ),
    (
        res("GlobalNetworkSet", {"nets": ["10.0.0.0/40"]}, "s"),
        "GlobalNetworkSet \"s\": spec.nets[0]: '10.0.0.0/40' is not a valid CIDR: prefix length 40 is too long for IPv4",
    ),
    # --- BGP ---
    (
        res("BGPPeer", {"asNumber": 4294967296, "peerIP": "10.0.0.1"}),
        'BGPPeer "x": spec.asNumber: AS number must be between 0 and 4294967295, got 4294967296',
    ),
    (
        res("BGPPeer", {"asNumber": "1.65536", "peerIP": "10.0.0.1"}),
        "BGPPeer \"x\": spec.asNumber: invalid AS number '1.65536': use 0-4294967295 or the dotted form 'a.b' (each 0-65535)",
    ),
    (
        res("BGPPeer", {"asNumber": 64512.5, "peerIP": "10.0.0.1"}),
        'BGPPeer "x": spec.asNumber: expected an AS number, got float 64512.5',
    ),
    (
        res("BGPPeer", {"peerIP": "10.0.0.1:0"}),
        "BGPPeer \"x\": spec.peerIP: '10.0.0.1:0': port must be between 1 and 65535",
    ),
    (res("BGPPeer", {"peerIP": "fd00::1:179"}), None),  # a bare IPv6 address, not a port
    (
        res("BGPPeer", {"peerIP": "peer.example.com"}),
        "BGPPeer \"x\": spec.peerIP: 'peer.example.com' is not '<IP>', '<IPv4>:<port>' or '[<IPv6>]:<port>'",
    ),
    (
        res("BGPPeer", {"node": "n1", "nodeSelector": "all()"}),
        'BGPPeer "x": spec.node: must be empty when nodeSelector is specified',
    ),
    (
        res("BGPPeer", {"peerSelector": "all()", "asNumber": 65000}),
        'BGPPeer "x": spec.asNumber: must be empty when peerSelector is specified',
    ),
    (
        res("BGPPeer", {"peerIP": "10.0.0.1", "reachableBy": "fd00::1"}),
        'BGPPeer "x": spec.reachableBy: reachableBy and peerIP address families differ',
    ),
    (
        res("BGPPeer", {"peerIP": "10.0.0.1", "sourceAddress": "NodeIP"}),
        "BGPPeer \"x\": spec.sourceAddress: must be one of UseNodeIP, None, got 'NodeIP'",
    ),
    (
        res("BGPPeer", {"peerIP": "10.0.0.1", "maxRestartTime": "2 minutes"}),
        "BGPPeer \"x\": spec.maxRestartTime: '2 minutes' is not a duration (use a number and unit, e.g. '90s', '1m30s', '250ms')",
    ),
    (
        res("BGPPeer", {"peerIP": "10.0.0.1", "ttlSecurity": 256}),
        'BGPPeer "x": spec.ttlSecurity: must be between 0 and 255, got 256',
    ),
    (
        res("BGPPeer", {"peerIP": "10.0.0.1", "password": {"secretKeyRef": {"name": "s"}}}),
        'BGPPeer "x": spec.password.secretKeyRef.key: is required',
    ),
    (
        res("BGPConfiguration", {"listenPort": 0}, "default"),
        'BGPConfiguration "default": spec.listenPort: must be between 1 and 65535, got 0',
    ),
    (
        res("BGPConfiguration", {"logSeverityScreen": "info"}, "default"),
        "BGPConfiguration \"default\": spec.logSeverityScreen: must be one of Trace, Debug, Info, Warning, Error, Fatal, got 'info'",
    ),
    (
        res("BGPConfiguration", {"serviceClusterIPs": [{"cidr": "10.96.0.1/12"}]}, "default"),
        "BGPConfiguration \"default\": spec.serviceClusterIPs[0].cidr: '10.96.0.1/12' is not strictly masked (the network is 10.96.0.0/12)",
    ),
    (
        res(
            "BGPConfiguration",
            {
                "communities": [{"name": "c", "value": "65536:1"}],
                "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["c"]}],
            },
            "default",
        ),
        "BGPConfiguration \"default\": spec.communities[0].value: invalid community value '65536:1': expected 16 bit numbers",
    ),
    (
        res("BGPConfiguration", {"communities": [{"name": "c", "value": "1:2"}]}, "default"),
        'BGPConfiguration "default": spec.communities: communities are defined but not used in prefixAdvertisements',
    ),
    (
        res("BGPConfiguration", {"prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["nope"]}]}, "default"),
        "BGPConfiguration \"default\": spec.prefixAdvertisements[0].communities[0]: community 'nope' is neither a valid "
        "value (aa:nn, aa:nn:mm) nor defined in communities",
    ),
    (
        res("BGPConfiguration", {"nodeToNodeMeshEnabled": False, "nodeMeshMaxRestartTime": "2m"}, "default"),
        'BGPConfiguration "default": spec.nodeMeshMaxRestartTime: cannot be set when nodeToNodeMeshEnabled is false',
    ),
    (
        res("BGPConfiguration", {"bindMode": "All"}, "default"),
        "BGPConfiguration \"default\": spec.bindMode: must be one of None, NodeIP, got 'All'",
    ),
    # --- Node ---
    (
        res("Node", {"bgp": {"ipv4Address": "fd00::1/64"}}, "n1"),
        "Node \"n1\": spec.bgp.ipv4Address: 'fd00::1/64' is not an IPv4 address or CIDR",
    ),
    (res("Node", {"bgp": {}}, "n1"), 'Node "n1": spec.bgp: must not be empty'),
    (
        res("Node", {"bgp": {"ipv4Address": "10.0.0.1/24", "routeReflectorClusterID": "x"}}, "n1"),
        "Node \"n1\": spec.bgp.routeReflectorClusterID: 'x' is not a valid IP address",
    ),
    (
        res("Node", {"vxlanTunnelMACAddr": "66:00:11"}, "n1"),
        "Node \"n1\": spec.vxlanTunnelMACAddr: '66:00:11' is not a valid MAC address",
    ),
    (
        res("Node", {"addresses": [{"address": "10.0.0.1", "type": "Public"}]}, "n1"),
        "Node \"n1\": spec.addresses[0].type: must be one of CalicoNodeIP, InternalIP, ExternalIP, got 'Public'",
    ),
    # --- endpoints ---
    (
        res("HostEndpoint", {"node": "n1"}, "h"),
        'HostEndpoint "h": spec.interfaceName: no interfaceName or expectedIPs have been specified',
    ),
    (res("HostEndpoint", {"interfaceName": "eth0"}, "h"), 'HostEndpoint "h": spec.node: is required'),
    (
        res("HostEndpoint", {"node": "n1", "interfaceName": "a-very-long-interface-name"}, "h"),
        "HostEndpoint \"h\": spec.interfaceName: 'a-very-long-interface-name' is not a valid interface name (1-15 letters, digits, '_', '.', '-')",
    ),
    (
        res("HostEndpoint", {"node": "n1", "expectedIPs": ["10.0.0.0/24"]}, "h"),
        "HostEndpoint \"h\": spec.expectedIPs[0]: '10.0.0.0/24' is not a valid IP address",
    ),
    (
        res(
            "HostEndpoint",
            {"node": "n1", "interfaceName": "*", "ports": [{"name": "dns", "port": 53, "protocol": "ICMP"}]},
            "h",
        ),
        "HostEndpoint \"h\": spec.ports[0].protocol: protocol 'ICMP' does not support ports (use TCP, UDP or SCTP)",
    ),
    (
        res(
            "HostEndpoint",
            {"node": "n1", "interfaceName": "*", "ports": [{"name": "Web", "port": 80, "protocol": "TCP"}]},
            "h",
        ),
        "HostEndpoint \"h\": spec.ports[0].name: 'Web' is not a valid port name (1-15 lower case letters, digits and '-', "
        "starting and ending with a letter or digit, no '--')",
    ),
    (
        res("WorkloadEndpoint", {"interfaceName": "cali1", "ipNetworks": ["10.0.0.0/24"]}, "w", namespace="n"),
        "WorkloadEndpoint \"n/w\": spec.ipNetworks[0]: '10.0.0.0/24' contains several addresses; only /32 and /128 are supported",
    ),
    (
        res("WorkloadEndpoint", {"ipNetworks": ["10.0.0.1/32"]}, "w", namespace="n"),
        'WorkloadEndpoint "n/w": spec.interfaceName: is required',
    ),
    (
        res(
            "WorkloadEndpoint",
            {
                "interfaceName": "cali1",
                "ipNetworks": ["10.0.0.1/32"],
                "ipNATs": [{"internalIP": "10.0.0.2", "externalIP": "172.16.0.1"}],
            },
            "w",
            namespace="n",
        ),
        'WorkloadEndpoint "n/w": spec.ipNATs[0].internalIP: 10.0.0.2 is not in the endpoint\'s ipNetworks',
    ),
    (
        res(
            "WorkloadEndpoint",
            {"interfaceName": "cali1", "ports": [{"protocol": "TCP", "port": 80}]},
            "w",
            namespace="n",
        ),
        'WorkloadEndpoint "n/w": spec.ports[0].name: is required when no hostPort is set',
    ),
    (
        res("WorkloadEndpoint", {"interfaceName": "cali1", "containerID": "-abc"}, "w", namespace="n"),
        "WorkloadEndpoint \"n/w\": spec.containerID: '-abc' is not a valid container ID (letters, digits and inner '-')",
    ),
    # --- Felix ---
    (
        res("FelixConfiguration", {"reportingInterval": "30"}, "default"),
        "FelixConfiguration \"default\": spec.reportingInterval: '30' is not a duration (use a number and unit, e.g. '90s', '1m30s', '250ms')",
    ),
    (
        res("FelixConfiguration", {"logSeverityScreen": "debug"}, "default"),
        "FelixConfiguration \"default\": spec.logSeverityScreen: must be one of Trace, Debug, Info, Warning, Error, Fatal, got 'debug'",
    ),
    (
        res("FelixConfiguration", {"routeTableRange": {"min": 0, "max": 300}}, "default"),
        'FelixConfiguration "default": spec.routeTableRange: must be a range of route table indices within 1..250',
    ),
    (
        res(
            "FelixConfiguration",
            {"routeTableRange": {"min": 1, "max": 2}, "routeTableRanges": [{"min": 1, "max": 2}]},
            "default",
        ),
        'FelixConfiguration "default": spec.routeTableRange: cannot be set when routeTableRanges is also set',
    ),
    (
        res("FelixConfiguration", {"kubeNodePortRanges": ["nodeports"]}, "default"),
        'FelixConfiguration "default": spec.kubeNodePortRanges: node port ranges should not contain named ports',
    ),
    (
        res("FelixConfiguration", {"natOutgoingAddress": "fd00::1"}, "default"),
        "FelixConfiguration \"default\": spec.natOutgoingAddress: 'fd00::1' is not an IPv4 address",
    ),
    (
        res("FelixConfiguration", {"wireguardListeningPort": 0}, "default"),
        'FelixConfiguration "default": spec.wireguardListeningPort: must be between 1 and 65535, got 0',
    ),
    (
        res("FelixConfiguration", {"iptablesMarkMask": -1}, "default"),
        'FelixConfiguration "default": spec.iptablesMarkMask: must be between 0 and 4294967295, got -1',
    ),
    (
        res("FelixConfiguration", {"failsafeInboundHostPorts": [{"protocol": "ICMP", "port": 1}]}, "default"),
        "FelixConfiguration \"default\": spec.failsafeInboundHostPorts[0].protocol: must be one of TCP, UDP, SCTP, got 'ICMP'",
    ),
    (
        res("FelixConfiguration", {"featureGates": "a=b,c"}, "default"),
        "FelixConfiguration \"default\": spec.featureGates: 'c' is not a key=value pair",
    ),
    (
        res("FelixConfiguration", {"ipipEnabled": "true"}, "default"),
        "FelixConfiguration \"default\": spec.ipipEnabled: expected a boolean, got a string 'true'",
    ),
    (
        res("FelixConfiguration", {"openstackRegion": "Region_1"}, "default"),
        'FelixConfiguration "default": spec.openstackRegion: must be a valid DNS label',
    ),
    # --- cluster ---
    (
        res("KubeControllersConfiguration", {"healthChecks": "On"}, "default"),
        "KubeControllersConfiguration \"default\": spec.healthChecks: must be one of Enabled, Disabled, got 'On'",
    ),
    (
        res("KubeControllersConfiguration", {"controllers": {"node": {"reconcilerPeriod": "5 min"}}}, "default"),
        "KubeControllersConfiguration \"default\": spec.controllers.node.reconcilerPeriod: '5 min' is not a duration "
        "(use a number and unit, e.g. '90s', '1m30s', '250ms')",
    ),
    (
        res("KubeControllersConfiguration", {"controllers": {"loadBalancer": {"assignIPs": "All"}}}, "default"),
        'KubeControllersConfiguration "default": spec.controllers.loadBalancer.assignIPs: must be one of AllServices, '
        "RequestedServicesOnly, got 'All'",
    ),
    (
        res("ClusterInformation", {"datastoreReady": "yes"}, "default"),
        "ClusterInformation \"default\": spec.datastoreReady: expected a boolean, got a string 'yes'",
    ),
    # --- IPAM ---
    (
        res("IPAMConfiguration", {"strictAffinity": False, "autoAllocateBlocks": False}, "default"),
        'IPAMConfiguration "default": spec.autoAllocateBlocks: cannot be false when strictAffinity is false',
    ),
    (
        res("IPAMConfiguration", {"strictAffinity": True, "ipCooldownSeconds": 1201}, "default"),
        'IPAMConfiguration "default": spec.ipCooldownSeconds: must be between 0 and 1200, got 1201',
    ),
    (
        res("BlockAffinity", {"state": "claimed", "node": "n1", "cidr": "10.0.0.0/26"}, "n1-10-0-0-0-26"),
        "BlockAffinity \"n1-10-0-0-0-26\": spec.state: must be one of confirmed, pending, pendingDeletion, got 'claimed'",
    ),
    (
        res("IPAMBlock", {"cidr": "10.0.0.0/30", "allocations": [None, None], "unallocated": [0, 1, 2, 3]}, "b")
        | {"apiVersion": "crd.projectcalico.org/v1"},
        'IPAMBlock "b": spec.allocations: must have one entry per address of 10.0.0.0/30 (4), got 2',
    ),
]


@pytest.mark.parametrize(("doc", "expected"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_validation_rule(doc, expected):
    if expected is None:
        from_dict(doc)
        return
    assert errors(doc) == [expected]


def test_unknown_key_suggests_the_right_one():
    assert errors(res("IPPool", {"cidr": "10.0.0.0/16", "blocksize": 26}, "pool1")) == [
        "IPPool \"pool1\": spec.blocksize: unknown key; did you mean 'blockSize'?"
    ]


def test_unknown_top_level_and_metadata_keys():
    doc = res("IPPool", {"cidr": "10.0.0.0/16"}, "p", labls={"a": "b"}) | {"specs": {}}
    assert errors(doc) == [
        "IPPool \"p\": metadata.labls: unknown key; did you mean 'labels'?",
        "IPPool \"p\": specs: unknown key; did you mean 'spec'?",
    ]


def test_every_problem_of_a_document_is_reported():
    doc = res(
        "IPPool",
        {"cidr": "10.0.0.1/16", "blockSize": 33, "blocksize": 3, "ipipMode": "always", "natOutgoing": 3},
        "pool1",
    )
    assert errors(doc) == [
        'IPPool "pool1": spec.natOutgoing: expected a boolean, got an integer 3',
        "IPPool \"pool1\": spec.blocksize: unknown key; did you mean 'blockSize'?",
        "IPPool \"pool1\": spec.ipipMode: must be one of Always, CrossSubnet, Never, got 'always'",
        "IPPool \"pool1\": spec.cidr: '10.0.0.1/16' is not strictly masked (the network is 10.0.0.0/16)",
        'IPPool "pool1": spec.blockSize: must be between 20 and 32 for IPv4, got 33',
    ]


def test_problems_in_several_rules_all_reported():
    doc = res(
        "GlobalNetworkPolicy",
        {"ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [0, "a:b"]}}, {"action": "Drop"}]},
        "p",
    )
    assert errors(doc) == [
        f"{R}.destination.ports[0]: port number must be between 1 and 65535, got 0",
        f"{R}.destination.ports[1]: 'a:b' is not a port number, 'min:max' range or valid port name",
        "GlobalNetworkPolicy \"p\": spec.ingress[1].action: must be one of Allow, Deny, Log, Pass, got 'Drop'",
    ]


MULTI = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: good}
spec: {cidr: 10.1.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool1}
spec: {cidr: 10.2.0.0/16, blockSize: 33}
---
apiVersion: projectcalico.org/v3
kind: IPPol
metadata: {name: typo}
---
- not a resource
"""


def test_multi_document_errors_name_the_document():
    with pytest.raises(ResourceError) as err:
        load_resources(MULTI)
    assert (
        err.value.lines[0]
        == '<input> document 2, IPPool "pool1": spec.blockSize: must be between 20 and 32 for IPv4, got 33'
    )
    assert err.value.lines[1].startswith(
        "<input> document 3: kind: unknown kind 'IPPol'; did you mean 'IPPool'? Known kinds: "
    )
    assert "NetworkPolicy" in err.value.lines[1] and "FelixConfiguration" in err.value.lines[1]
    assert err.value.lines[2] == "<input> document 4 item 1: (top level): expected a table (a resource), got str"
    assert str(err.value) == "\n".join(err.value.lines)


def test_single_document_from_a_named_source():
    with pytest.raises(ResourceError) as err:
        load_resources("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n", "pools.yaml")
    assert err.value.lines == ['pools.yaml, IPPool "p": spec.cidr: is required']


def test_missing_kind_and_bad_yaml():
    with pytest.raises(ResourceError) as err:
        load_resources("apiVersion: projectcalico.org/v3\nmetadata: {name: p}\n")
    assert err.value.lines == ["kind: is required"]
    with pytest.raises(ResourceError, match=r"^m\.yaml: invalid YAML or JSON: "):
        load_resources("a: [1, 2\n", "m.yaml")


def test_validation_can_be_skipped():
    (p,) = load_resources(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: P}\nspec: {cidr: x}\n", validate=False
    )
    assert p.spec.cidr == "x"
    assert [path for path, _ in p.problems()] == ["spec.cidr", "metadata.name"]


def test_empty_strings_mean_unset_as_in_go():
    felix = res("FelixConfiguration", {"bpfLogLevel": "", "iptablesBackend": ""}, "default")
    assert from_dict(felix).spec.bpf_log_level == ""
    p = from_dict(res("IPPool", {"cidr": "10.0.0.0/16", "ipipMode": "", "blockSize": 0}, "p"))
    assert (p.spec.ipip_mode, p.spec.block_size) == ("Never", 26)


def test_validate_a_resource_built_in_python():
    from pycalico.core.resources import IPPool, ObjectMeta
    from pycalico.core.resources.ippool import IPPoolSpec

    pool = IPPool(metadata=ObjectMeta(name="p"), spec=IPPoolSpec(cidr="10.0.0.0/16", block_size=40))
    with pytest.raises(ResourceError) as err:
        pool.validate()
    assert err.value.lines == ['IPPool "p": spec.blockSize: must be between 20 and 32 for IPv4, got 40']
