"""The public face of a model: views as tables (SQL) and types (GraphQL), with their fields.

A view declared in YAML lists metrics and dimensions; when a project declares no views,
each model is shown as a view of its own dimensions and measures plus the metrics built
only from its measures. Field names drop the model prefix (`utm_source`) unless two
fields would clash, then they keep it with an underscore (`leads_created_at`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .model.types import SemanticModel


@dataclass(frozen=True)
class ViewField:
    name: str  # column / field name as the view shows it
    kind: str  # "dimension" or "metric"
    ref: str  # the semantic name a SemanticQuery uses: model.dimension, metric, model.measure
    type: str  # dimension: categorical | time | number | boolean; metric: ratio | derived | simple | <agg>
    description: str | None
    format: str | None = None


@dataclass(frozen=True)
class PublicView:
    name: str
    description: str | None
    fields: tuple[ViewField, ...]
    count: str | None = None  # the count measure COUNT(*) over the view means (YAML `count:`)
    entity: str | None = None  # `model.entity` the view is keyed by (YAML `entity:`): its first column

    @property
    def key(self) -> tuple[ViewField, ...]:
        """The columns a row of `SELECT * FROM view` is unique on: the entity of a keyed view,
        else every dimension (the query groups by them); none for a view of metrics only."""
        if self.entity is not None:
            return tuple(f for f in self.dimensions if f.ref == self.entity)
        return self.dimensions

    def field(self, name: str) -> ViewField | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    @property
    def dimensions(self) -> tuple[ViewField, ...]:
        return tuple(f for f in self.fields if f.kind == "dimension")

    @property
    def metrics(self) -> tuple[ViewField, ...]:
        return tuple(f for f in self.fields if f.kind == "metric")


def public_views(model: SemanticModel) -> dict[str, PublicView]:
    """Every view a door shows, by name (cached on the model: it is immutable)."""
    cached = model.compile_cache.get("__public_views__")
    if cached is None:
        cached = model.compile_cache["__public_views__"] = _build(model)
    return cached


def _build(model: SemanticModel) -> dict[str, PublicView]:
    if model.views:
        return {v.name: _view(model, v.name, v.description, _keyed(v.entity, v.dimensions), v.metrics, v.count, v.entity)
                for v in model.views.values()}
    result = {}
    for m in model.models.values():
        own_metrics = [
            name for name, metric in model.metrics.items()
            if metric.inputs and all(i.measure.split(".")[0] == m.name for i in metric.inputs.values())
        ]
        result[m.name] = _view(
            model, m.name, m.description,
            [d.qualified_name for d in m.dimensions.values()],
            own_metrics + [x.qualified_name for x in m.measures.values()],
        )
    return result


def _keyed(entity: str | None, dimensions: tuple[str, ...]) -> tuple[str, ...]:
    """A keyed view shows its entity as its first column (an online lookup in SQL:
    `SELECT * FROM merchant_features WHERE merchant = 17`)."""
    return dimensions if entity is None or entity in dimensions else (entity, *dimensions)


def _view(model: SemanticModel, name: str, description, dimensions, metrics, count: str | None = None,
          entity: str | None = None) -> PublicView:
    refs = [("dimension", d) for d in dimensions] + [("metric", m) for m in metrics]
    short = [ref.split(".")[-1] for _, ref in refs]
    fields = []
    for (kind, ref), bare in zip(refs, short):
        field_name = bare if short.count(bare) == 1 else ref.replace(".", "_")
        if kind == "dimension":
            dim = model.dimension(ref)
            if dim is None:  # an entity without a dimension of its name
                owner, _, key = ref.partition(".")
                fields.append(ViewField(field_name, kind, ref, "categorical", f"The {key} key of {owner} (entity)."))
            else:
                fields.append(ViewField(field_name, kind, ref, dim.type, dim.description))
        elif ref in model.metrics:
            metric = model.metrics[ref]
            fields.append(ViewField(field_name, kind, ref, metric.type, metric.description, metric.format))
        else:
            measure = model.measure(ref)
            fields.append(ViewField(field_name, kind, ref, measure.agg, measure.description))
    return PublicView(name, description, tuple(fields), count, entity)
