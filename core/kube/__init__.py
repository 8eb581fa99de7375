"""Kubernetes objects as Calico sees them: the conversion of ``libcalico-go/lib/backend/k8s/conversion``.

One implementation for every reader of Kubernetes objects: the Kubernetes datastore
plugin (which reads them natively), the lab (which plays the API server and
kube-controllers in etcd mode) and calico-kube-controllers (which writes them to etcd).

Modules: ``names`` (profile and policy names, labels, UIDs), ``pods`` (a pod's endpoint
labels, profiles and named ports), ``profiles`` (Namespace and ServiceAccount),
``policy`` (NetworkPolicy), ``convert`` (any of these by apiVersion and kind),
``validation`` (what the API server checks and fills in first), ``objects`` (building
the result).
"""
