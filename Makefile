# The two quick-start commands, `make demo` and `make test`, install what is missing
# (Debian packages, the venv) and then run. Everything else is a step of theirs.
SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
APT_PACKAGES := python3-venv etcd-server etcd-client bird2 iptables ipset nftables iproute2 \
	containernetworking-plugins iputils-ping netcat-openbsd \
	gobgpd iperf3 openssl openssh-server
PYTEST_ARGS ?=

.PHONY: demo test deps venv clean

demo: deps venv
	$(VENV)/bin/calico-lab demo $(DEMO_ARGS)

test: deps venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Installs only the packages that are missing. Package scripts must not start
# etcd or BIRD in the root namespace (Debian enables both services), so service
# starts are refused for the length of the install (policy-rc.d, exit 101).
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		guard=/usr/sbin/policy-rc.d; made=0; \
		if [ ! -e $$guard ]; then printf '#!/bin/sh\nexit 101\n' > $$guard; chmod +x $$guard; made=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; rc=$$?; \
		[ $$made = 1 ] && rm -f $$guard; exit $$rc; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip 'setuptools>=77' wheel
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build dist *.egg-info
