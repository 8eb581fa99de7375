"""calico-typha: one datastore watch fanned out to many agents over TCP (port 5473)."""
