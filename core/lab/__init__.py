"""A Calico cluster in network namespaces on one machine (see `calico-lab`)."""

from .cluster import Lab, LabNotFound
from .config import node_config_text
from .state import LabError, NodeRecord, ProcessRecord, default_state_root

__all__ = ["Lab", "LabError", "LabNotFound", "NodeRecord", "ProcessRecord",
           "default_state_root", "node_config_text"]
