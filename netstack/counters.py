"""Per-layer counters (DEVELOPERS.md "Every layer counts")."""

from __future__ import annotations

from collections import defaultdict


class Counters:
    """A two-level counter: layer -> name -> int. Cheap to bump on the hot path."""

    __slots__ = ("_layers",)

    def __init__(self) -> None:
        self._layers: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )

    def inc(self, layer: str, name: str, n: int = 1) -> None:
        """Add ``n`` to ``layer.name``."""
        self._layers[layer][name] += n

    def layer(self, layer: str) -> defaultdict[str, int]:
        """The mutable dict of one layer (hot paths keep a reference to it)."""
        return self._layers[layer]

    def get(self, layer: str, name: str) -> int:
        """The value of ``layer.name`` (0 when never counted)."""
        layer_d = self._layers.get(layer)
        return 0 if layer_d is None else layer_d.get(name, 0)

    def as_dict(self) -> dict[str, dict[str, int]]:
        """A plain-dict snapshot."""
        return {k: dict(v) for k, v in sorted(self._layers.items())}
