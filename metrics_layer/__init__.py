"""metrics-layer: a semantic metrics layer served over PostgreSQL wire, GraphQL and REST."""

__version__ = "0.1.0"


def training_set(project, spine, metrics, at: str = "at", entity=None, key=None, filters=(), as_arrow: bool = False):
    """Point-in-time values of `metrics` at every row of `spine` (pandas, Arrow or a .csv/.parquet path):
    the spine's columns plus one column per metric, in the spine's order. `project`: a directory
    (or a Project, or a MetricsService; None: $METRICS_LAYER_PROJECT, the current folder, else the demo).
    A pandas DataFrame unless `as_arrow`."""
    from .features import training_set as _training_set
    from .project import Project, load_project
    from .service import MetricsService

    if isinstance(project, MetricsService):
        service = project
    else:
        service = MetricsService(project if isinstance(project, Project)
                                 else load_project(None if project is None else str(project)))
    table = _training_set(service, spine, metrics, at=at, entity=entity, key=key, filters=filters)
    return table if as_arrow else table.to_pandas()
