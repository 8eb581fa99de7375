"""calico-kube-controllers: the cluster-wide controllers (node, IPAM GC, and the etcd-mode syncs from Kubernetes)."""
