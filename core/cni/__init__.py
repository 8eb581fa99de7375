"""The CNI plugin: the ``calico`` and ``calico-ipam`` executables and the agent side.

A container runtime runs ``calico`` once per pod, so start-up is most of its latency.
The executable (``main``) therefore imports nothing of pycalico beyond this package's
light modules: it hands the request to the running node agent over a local unix socket
(``server``) and only when no agent listens does the whole work itself, in process
(``handler``). Both paths run the same ``handler`` code.

Modules: ``spec`` (CNI versions, error codes, results in every version), ``netconf``
(the network configuration and the CNI_* environment), ``naming`` (Calico's names for
endpoints, host veths and IPAM handles), ``dataplane`` (veth, addresses, routes and
sysctls, in the container's and the host's namespaces), ``ipam`` (calico-ipam and
delegated IPAM plugins), ``invoke`` (running another CNI plugin, as libcni does: the one
runner for delegated IPAM, host-local's included), ``handler`` (ADD, DEL, CHECK, STATUS,
GC, VERSION), ``server`` (the agent's socket), ``main`` (the executables' entry point).

Keep this file free of imports: every executable run imports it.
"""
