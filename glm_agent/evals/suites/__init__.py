"""The suites, by name. Modules are imported on first use so `import glm_agent.evals` stays light."""

from __future__ import annotations

from typing import Any

from glm_agent.core.lazy import import_object

__all__ = ["SUITE_NAMES", "suite_class", "make_suite", "SUITES"]

_TARGETS = {
    "os": "glm_agent.evals.suites.os:OSSuite",
    "db": "glm_agent.evals.suites.db:DBSuite",
    "fc": "glm_agent.evals.suites.fc:FCSuite",
    "math": "glm_agent.evals.suites.math:MathSuite",
    "web": "glm_agent.evals.suites.web:WebSuite",
    "route": "glm_agent.evals.suites.route:RouteSuite",
}
SUITE_NAMES: tuple[str, ...] = tuple(_TARGETS)


def suite_class(name: str) -> type:
    if name not in _TARGETS:
        raise KeyError(f"unknown suite {name!r}; available suites: {', '.join(SUITE_NAMES)}")
    return import_object(_TARGETS[name])


def make_suite(name: str, data: Any = None, **options: Any) -> Any:
    return suite_class(name)(data=data, **options)


class _Lazy(dict):
    """`SUITES[name]` -> suite class, imported when first asked for."""

    def __missing__(self, name: str) -> type:
        cls = suite_class(name)
        self[name] = cls
        return cls

    def __contains__(self, name: object) -> bool:
        return name in _TARGETS


SUITES: dict[str, type] = _Lazy()
