"""pycalico.testinfra: checks an operator runs against Calico nodes with pytest-testinfra.

    pytest --pyargs pycalico.testinfra --hosts=ssh://node1,ssh://node2
    pytest --pyargs pycalico.testinfra --ansible-inventory=INV --hosts=all

Each node's probes run in one remote command (:mod:`.gather`); the outputs are read on
this side with pycalico's own code (:mod:`.view`) and judged by :mod:`.checks`; the
tests themselves are in ``suite/`` and the options in :mod:`.plugin`. See
docs/testinfra.md.
"""
