"""The plugin manager: finds plugins, fills the slots calico.toml names, and calls hooks.

The rest of the code calls the methods of ``Plugins`` and never ``pm.hook`` strings,
so every hook has one caller that shows how it is used.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Mapping
from importlib.metadata import entry_points
from typing import Any

import pluggy

from pycalico.core import config as cfg
from pycalico.core.calc import DesiredState
from pycalico.core.datastore import Datastore
from pycalico.core.metrics import Sample
from pycalico.core.report import PassReport
from pycalico.core.resources.nodestatus import CalicoNodeStatusStatus
from pycalico.hooks import spec

HOOK_ONLY = "plugins"


def group(slot: str) -> str:
    """The entry-point group of a slot (or of hook-only plugins)."""
    return f"pycalico.{slot}"


class PluginError(Exception):
    """A plugin could not be loaded or broke the contract."""


Extra = Mapping[str, Mapping[str, object]]  # slot (or "plugins") -> name -> plugin


class Registry:
    """Which plugins exist: installed entry points plus plugins handed in directly
    (tests, embedding), which shadow entry points of the same name."""

    def __init__(self, extra: Extra | None = None, installed: bool = True):
        self._extra = extra or {}
        self._installed = installed  # False: only the handed-in plugins exist

    def _entry_points(self, slot: str, **match: str) -> list:
        return list(entry_points(group=group(slot), **match)) if self._installed else []

    def names(self, slot: str) -> list[str]:
        found = {ep.name for ep in self._entry_points(slot)}
        return sorted(found | set(self._extra.get(slot, {})))

    def load(self, slot: str, name: str) -> object:
        if name in self._extra.get(slot, {}):
            return self._extra[slot][name]
        for ep in self._entry_points(slot, name=name):
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginError(f"{slot} plugin {name!r} ({ep.value}) failed to import: {exc}") from exc
            return obj() if inspect.isclass(obj) else obj
        raise PluginError(f"no {slot} plugin named {name!r}")


class Plugins:
    """The registered plugins of one configuration, behind one method per hook."""

    def __init__(self, pm: pluggy.PluginManager, config: cfg.Config):
        self._pm = pm
        self.config = config

    @classmethod
    def load(
        cls,
        config: cfg.Config,
        source: str = "calico.toml",
        registry: Registry | None = None,
        configure: bool = True,
        slots: tuple[str, ...] = cfg.SLOTS,
    ) -> Plugins:
        """Register the plugins ``config`` names for ``slots`` (tools such as calicoctl
        need only the datastore), validate their tables and, unless ``configure`` is
        false (a dry check), configure them.

        Raises ConfigError for bad names or tables, PluginError for a broken plugin.
        """
        registry = registry or Registry()
        pm = pluggy.PluginManager("pycalico")
        pm.add_hookspecs(spec)
        for slot in slots:
            name = config.slot(slot).type
            if name in registry.names(slot):
                pm.register(registry.load(slot, name), name=f"{slot}:{name}")
        for name in registry.names(HOOK_ONLY):
            if name not in config.plugins.disabled:
                pm.register(registry.load(HOOK_ONLY, name), name=f"{HOOK_ONLY}:{name}")
        config = cfg.bind_plugins(
            config,
            installed=registry.names,
            schema=lambda slot, name: pm.hook.pycalico_config_schema(slot=slot, name=name),
            source=source,
            slots=slots,
        )
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(str(exc)) from exc
        plugins = cls(pm, config)
        if configure:
            plugins.configure()
        return plugins

    def names(self) -> list[str]:
        """Registered plugins as ``slot:name``."""
        return sorted(name for name, _ in self._pm.list_name_plugin())

    def configure(self, groups: Collection[str] | None = None) -> None:
        """``pycalico_configure`` for every plugin, or those of ``groups`` (slot names,
        ``plugins`` for the hook-only ones) alone."""
        if groups is None:
            self._pm.hook.pycalico_configure.call_historic(kwargs={"config": self.config})
        else:
            self._call_only(groups, "pycalico_configure", config=self.config)

    def unconfigure(self, groups: Collection[str] | None = None) -> None:
        """``pycalico_unconfigure`` for every plugin, or those of ``groups`` alone."""
        if groups is None:
            self._pm.hook.pycalico_unconfigure(config=self.config)
        else:
            self._call_only(groups, "pycalico_unconfigure", config=self.config)

    def changed(self, other: Plugins) -> list[str]:
        """The groups whose plugin or plugin options differ in ``other``: the slots
        (``datastore``...), and ``plugins`` when the hook-only set changed."""
        groups = [s for s in cfg.SLOTS if _chosen(self.config, s) != _chosen(other.config, s)]
        if self.config.plugins != other.config.plugins:
            groups.append(HOOK_ONLY)
        return groups

    def datastore(self) -> Datastore:
        store = self._pm.hook.pycalico_datastore(config=self.config)
        if store is None:
            raise PluginError(f"datastore plugin {self.config.datastore.type!r} returned no datastore")
        return store

    def ipam(self, datastore: Datastore) -> Any:
        return self._pm.hook.pycalico_ipam(config=self.config, datastore=datastore)

    def reconcile_node(self, state: DesiredState, datastore: Datastore, ipam: Any) -> tuple[str, ...]:
        return _lines(self._pm.hook.pycalico_reconcile_node(state=state, config=self.config, datastore=datastore, ipam=ipam))

    def reconcile(self, slot: str, state: DesiredState) -> tuple[str, ...]:
        """Run the reconcile hook of ``slot`` (``routing`` or ``policy``)."""
        hook = getattr(self._pm.hook, f"pycalico_reconcile_{slot}")
        return _lines(hook(state=state, config=self.config))

    def pass_done(self, report: PassReport) -> None:
        self._pm.hook.pycalico_pass_done(report=report)

    def readiness(self, slot: str | None = None) -> list[str]:
        """Every plugin's reasons not to be ready (only ``slot``'s plugin, if given)."""
        if slot is None:
            return list(_lines(self._pm.hook.pycalico_readiness(config=self.config)))
        return list(_lines(self._call_only((slot,), "pycalico_readiness", config=self.config)))

    def metrics(self) -> list[Sample]:
        return [sample for samples in self._pm.hook.pycalico_metrics(config=self.config) if samples for sample in samples]

    def _call_only(self, groups: Collection[str], hook: str, **kwargs: Any) -> list:
        """``hook`` called on the plugins registered for ``groups`` alone, in pluggy's
        order; their results. (Not pluggy's subset caller: it needs hashable plugins.)"""
        chosen = [plugin for name, plugin in self._pm.list_name_plugin() if name.split(":", 1)[0] in groups]
        results = []
        for impl in reversed(getattr(self._pm.hook, hook).get_hookimpls()):
            if any(impl.plugin is plugin for plugin in chosen):
                results.append(impl.function(**{arg: kwargs[arg] for arg in impl.argnames}))
        return results

    def bgp_status(self, classes: Collection[str]) -> CalicoNodeStatusStatus | None:
        """The routing plugin's reading of its BGP daemon for ``classes``; None when no
        plugin runs one."""
        return self._pm.hook.pycalico_bgp_status(config=self.config, classes=tuple(classes))

    def node_status(self, state: DesiredState) -> list[tuple[str, str]]:
        return [pair for pairs in self._pm.hook.pycalico_node_status(state=state) if pairs for pair in pairs]


def _chosen(config: cfg.Config, slot: str) -> tuple[str, Any]:
    chosen = config.slot(slot)
    return chosen.type, chosen.options


def _lines(results: list) -> tuple[str, ...]:
    """Every implementation's change lines, in one tuple."""
    return tuple(line for lines in results if lines for line in lines)
