"""`type: classification`: one declaration expanded, at load, into ordinary metrics.

A classification metric names the entity whose rows are counted, the prediction (label column,
optional probability column), the ground-truth model and the rule that makes a row positive.
It becomes plain simple / ratio / derived metrics named `<name>.accuracy`, `<name>.precision`...
over measures of the entity's model, so every door serves them and the three-level compiler
compiles them like any hand-written metric (nothing is computed after the query).

The confusion cells are row filters on the entity's model:

    predicted      label IS NOT NULL
    positive       COALESCE(<positive rule>, FALSE)      -- no ground-truth row: negative
    true_positive  label = 1 AND positive                 false_positive  label = 1 AND NOT positive
    false_negative label = 0 AND positive                 true_negative   label = 0 AND NOT positive

Measures the expansion needs beyond a count of the entity (per-row losses, costs) are added to
the entity's model under names starting with the metric's name and `__`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlglot import exp

from .errors import did_you_mean
from .types import Measure, MeasureInput, Metric, qualify
from .yaml_source import Location, Node

if TYPE_CHECKING:
    from .load import _Loader

CLASSIFICATION_KEYS = (
    "name", "type", "description", "entity", "prediction", "ground_truth", "positive",
    "window", "label_delay", "costs",
)
PREDICTION_KEYS = ("label", "score", "model_version")
COST_KEYS = ("false_negative", "false_positive")

# What each provided metric means, for its description.
PROVIDED = {
    "predictions": "Number of predicted rows (a label is present).",
    "true_positives": "Predicted positive and positive.",
    "false_positives": "Predicted positive, not positive.",
    "false_negatives": "Predicted negative, positive.",
    "true_negatives": "Predicted negative, not positive.",
    "accuracy": "Share of predicted rows whose label matched the ground truth.",
    "precision": "Of the rows predicted positive, the share that were positive.",
    "recall": "Of the predicted rows that were positive, the share predicted positive.",
    "f1": "2·TP / (2·TP + FP + FN): harmonic mean of precision and recall.",
    "false_positive_rate": "Of the predicted rows that were negative, the share predicted positive.",
    "log_loss": "Mean negative log-likelihood of the ground truth under the score (score clipped to [1e-15, 1-1e-15]).",
    "brier_score": "Mean squared difference between the score and the ground truth (1 or 0).",
    "coverage_predictions": "Predictions from the start of the metric's window up to now (or as_of): window plus label delay.",
    "mature": "Predictions old enough for their label (older than the label delay): the ones the metrics count.",
    "labelled": "Mature predictions with a ground-truth row.",
    "coverage": "Share of the predictions since the window's start that are mature: mature / coverage_predictions.",
    "matured": "Predictions older than the label delay as of now (or as_of), in each group: no window.",
    "predicted": "Predictions up to now (or as_of), in each group: no window.",
    "matured_share": "Share of the predictions whose label delay has passed, as of now (or as_of): by hour of prediction, how far that hour's labels are in (matured / predicted).",
    "estimated_accuracy": "Estimate (CBPE) over the predictions younger than the label delay: expected share correct, from the score.",
    "estimated_precision": "Estimate (CBPE) over the predictions younger than the label delay: mean score of those predicted positive.",
    "estimated_recall": "Estimate (CBPE) over the predictions younger than the label delay: expected TP / expected positives.",
    "cost": "Cost of the errors: the false-negative cost over false negatives plus the false-positive cost over false positives.",
}


def provided_names(has_score: bool, has_costs: bool) -> list[str]:
    names = ["predictions", "true_positives", "false_positives", "false_negatives", "true_negatives",
             "accuracy", "precision", "recall", "f1", "false_positive_rate"]
    if has_score:
        names += ["log_loss", "brier_score"]
    if has_costs:
        names.append("cost")
    return names


def expand(loader: "_Loader", node: Node, name: str) -> None:
    """Add the metrics of one classification declaration to the loader (or report its errors)."""
    what = f"classification metric '{name}'"
    errors_before = len(loader.errors)
    if name in loader.models:
        loader.error(node.at("name"), f"{what}: '{name}' is also a model; its metrics would read as {name}.<measure>. Rename one")
        return
    entity_model, count = _entity(loader, node, what)
    prediction = node.get("prediction")
    if not isinstance(prediction, Node):
        loader.error(node.at("prediction") if "prediction" in node else node.location,
                     f"{what} needs prediction: {{label: model.column, score: model.column (optional), model_version: model.dimension (optional)}}")
        return
    loader.mapping(prediction, node.at("prediction"), f"{what} prediction", PREDICTION_KEYS)
    label_text = _column_text(loader, prediction, "label", what, required=True)
    score_text = _column_text(loader, prediction, "score", what, required=False)
    _model_version(loader, prediction, what)
    positive_text = _positive(loader, node, what, entity_model is not None)
    window = loader.interval(node, "window", what)
    delay = loader.interval(node, "label_delay", what)
    if delay and not window:
        loader.error(node.at("label_delay"), f"{what}: label_delay needs a window (it shifts the trailing window back)")
    if window and entity_model is not None and loader.models[entity_model].time_expr is None:
        loader.error(node.at("window"), f"{what} has a window but model '{entity_model}' has no time; add `time: <timestamp column>` to model '{entity_model}'")
    costs = node.get("costs")
    if costs is not None and loader.mapping(costs, node.at("costs"), f"{what} costs", COST_KEYS) is not None:
        for key in COST_KEYS:
            amount = costs.get(key)
            if key in costs and (isinstance(amount, bool) or not isinstance(amount, (int, float, str))):
                loader.error(costs.at(key), f"{what} costs {key} must be a number or a SQL expression over model columns "
                                            f"(e.g. transactions.amount), got {amount!r}")
        if not any(key in costs for key in COST_KEYS):
            loader.error(node.at("costs"), f"{what} costs needs false_negative and/or false_positive: an amount or a column expression")
    if len(loader.errors) > errors_before or entity_model is None or label_text is None or positive_text is None:
        return

    # Joins are checked once for the declaration, not once per metric it provides.
    reached = {c.table for text in (label_text, positive_text, score_text) if text
               for c in loader.sql(text, node.location, what).find_all(exp.Column) if c.table} - {entity_model}
    loader.check_reach(entity_model, {m for m in reached if m in loader.models}, node.location, what)
    if len(loader.errors) > errors_before:
        return
    label, positive = f"({label_text})", f"COALESCE(({positive_text}), FALSE)"
    cells = {
        "predictions": f"{label} IS NOT NULL",
        "true_positives": f"{label} = 1 AND {positive}",
        "false_positives": f"{label} = 1 AND NOT {positive}",
        "false_negatives": f"{label} = 0 AND {positive}",
        "true_negatives": f"{label} = 0 AND NOT {positive}",
    }
    # Where a mistake in a composed filter is shown: the positive rule or the label.
    at = node.at("positive") if "positive" in node else prediction.at("label")
    description = loader.text(node, "description", what)
    common = dict(description=None, label=None, window=window, label_delay=delay, location=node.location)

    def use(filter_text: str) -> MeasureInput | None:
        return loader.measure_input(count, at, f"{what}", filter_text, at)

    def add(suffix: str, kind: str, fmt: str | None, inputs=None, expr=None, **timing) -> None:
        """A provided metric `<name>.<suffix>`; `timing` (window=, label_delay=) overrides the classification's."""
        if inputs is not None and None in inputs.values():
            return  # reported by measure_input
        text = PROVIDED[suffix] + (f" Of: {description.strip()}" if description else "")
        loader.metrics[f"{name}.{suffix}"] = Metric(
            name=f"{name}.{suffix}", type=kind, format=fmt, inputs=inputs or {}, expr=expr,
            **{**common, **timing, "description": text},
        )

    for cell, condition in cells.items():
        add(cell, "simple", "integer", {"measure": use(condition)})
    add("accuracy", "ratio", "percent", {
        "numerator": use(f"({cells['true_positives']}) OR ({cells['true_negatives']})"),
        "denominator": use(cells["predictions"])})
    add("precision", "ratio", "percent", {
        "numerator": use(cells["true_positives"]), "denominator": use(f"{label} = 1")})
    add("recall", "ratio", "percent", {
        "numerator": use(cells["true_positives"]), "denominator": use(f"{label} IS NOT NULL AND {positive}")})
    add("false_positive_rate", "ratio", "percent", {
        "numerator": use(cells["false_positives"]), "denominator": use(f"{label} IS NOT NULL AND NOT {positive}")})
    tp, fp, fn = (_metric_ref(f"{name}.{c}") for c in ("true_positives", "false_positives", "false_negatives"))
    add("f1", "derived", "percent", expr=exp.Div(
        this=exp.Mul(this=exp.Literal.number(2), expression=tp.copy()),
        expression=exp.Paren(this=exp.Add(this=exp.Add(this=exp.Mul(this=exp.Literal.number(2), expression=tp),
                                                                expression=fp), expression=fn))))
    if score_text is not None:
        score = f"CAST(({score_text}) AS DOUBLE PRECISION)"
        clipped = f"LEAST(GREATEST({score}, 1e-15), 1 - 1e-15)"
        scored = f"{label} IS NOT NULL AND ({score_text}) IS NOT NULL"
        losses = {
            "log_loss": f"CASE WHEN {positive} THEN -LN({clipped}) ELSE -LN(1 - {clipped}) END",
            "brier_score": f"CASE WHEN {positive} THEN (1 - {score}) * (1 - {score}) ELSE {score} * {score} END",
        }
        for metric_name, loss in losses.items():
            measure = _sum_measure(loader, entity_model, f"{name}__{metric_name}_sum", loss, at, what,
                                   PROVIDED[metric_name])
            if measure is not None:
                add(metric_name, "ratio", "number", {
                    "numerator": loader.measure_input(measure, at, what, scored, at),
                    "denominator": use(scored)})
    if delay is not None and window is not None:
        _coverage(loader, node, name, entity_model, label, window, delay, use, add, common)
        if score_text is not None:
            _estimated(loader, name, entity_model, label, score_text, delay, at, what, use, common)
    if isinstance(costs, Node):
        _costs(loader, node, costs, name, entity_model, cells, what, add)


def _costs(loader, node: Node, costs: Node, name: str, entity_model: str, cells: dict, what: str, add) -> None:
    terms = []
    for key in COST_KEYS:
        if key not in costs:
            continue
        amount = costs[key]
        cell = {"false_negative": "false_negatives", "false_positive": "false_positives"}[key]
        measure = _sum_measure(loader, entity_model, f"{name}__{key}_cost", str(amount), costs.at(key),
                               f"{what} costs {key}", f"Cost of the {cell.replace('_', ' ')} of {name}.",
                               cells[cell])
        if measure is not None:
            terms.append(exp.column(measure.partition(".")[2], table=measure.partition(".")[0]))
    if not terms:
        return  # reported where the amounts are written
    expr = terms[0]
    for term in terms[1:]:
        expr = exp.Add(this=expr, expression=term)
    add("cost", "derived", "currency", expr=expr)


def _coverage(loader, node: Node, name: str, entity_model: str, label: str, window, delay, use, add, common) -> None:
    """Label coverage as a current value: the metric counts the predictions of (E-delay-window,
    E-delay]; the predictions of (E-delay-window, E] are the ones it could be about. Both are
    trailing windows, so the companions are ordinary windowed metrics."""
    truth = loader.models[node["ground_truth"]]
    entity = str(node["entity"]).partition(".")[2]
    has_row = (f"{truth.name}.{truth.entities[entity].expr.sql()} IS NOT NULL" if entity in truth.entities
               else f"COALESCE(({node.get('positive')}), FALSE)")
    predicted = f"{label} IS NOT NULL"
    add("mature", "simple", "integer", {"measure": use(predicted)})
    add("labelled", "simple", "integer", {"measure": use(f"{predicted} AND {has_row}")})
    add("coverage_predictions", "simple", "integer", {"measure": use(predicted)}, window=window + delay, label_delay=None)
    double = exp.DataType(this=exp.DataType.Type.DOUBLE)
    add("coverage", "derived", "percent", expr=exp.Div(
        this=exp.Cast(this=_metric_ref(f"{name}.mature"), to=double),
        expression=_metric_ref(f"{name}.coverage_predictions")))
    # Per bucket of prediction time, as of now (or as_of): no window, so no rolling. `matured`
    # counts the predictions older than the delay (time <= E - delay), `predicted` all of them.
    add("matured", "simple", "integer", {"measure": use(predicted)}, window=None)
    add("predicted", "simple", "integer", {"measure": use(predicted)}, window=None, label_delay=None)
    add("matured_share", "derived", "percent", expr=exp.Div(
        this=exp.Cast(this=_metric_ref(f"{name}.matured"), to=double),
        expression=_metric_ref(f"{name}.predicted")), window=None, label_delay=None)


def _estimated(loader, name: str, entity_model: str, label: str, score_text: str, delay, at, what, use, common) -> None:
    """CBPE over the immature predictions, those of (E - delay, E]: with a calibrated score p,
    expected TP = sum of p over label = 1, FP = sum of 1 - p there, FN = sum of p over label = 0,
    TN = sum of 1 - p there. Sums of p and 1 - p are measures; the estimates are ratios over a
    trailing window of the label delay, so they compile like any windowed metric."""
    p = f"CAST(({score_text}) AS DOUBLE PRECISION)"
    scored = f"{label} IS NOT NULL AND ({score_text}) IS NOT NULL"
    s_p = _sum_measure(loader, entity_model, f"{name}__score_sum", p, at, what, "Sum of the score.")
    s_q = _sum_measure(loader, entity_model, f"{name}__one_minus_score_sum", f"1 - {p}", at, what, "Sum of 1 - score.")
    if s_p is None or s_q is None:
        return
    expected = {  # numerator (measure, filter), denominator filter
        "estimated_accuracy": ((s_p, f"{label} = 1"), (s_q, f"{label} = 0"), scored),
        "estimated_precision": ((s_p, f"{label} = 1"), None, f"{label} = 1 AND ({score_text}) IS NOT NULL"),
        "estimated_recall": ((s_p, f"{label} = 1"), None, None),
    }
    window = {**common, "window": delay, "label_delay": None}
    for suffix, (first, second, den) in expected.items():
        num_inputs = {"numerator": loader.measure_input(first[0], at, what, first[1], at)}
        if suffix == "estimated_recall":  # expected TP / expected positives (sum of p over every scored row)
            inputs = {**num_inputs, "denominator": loader.measure_input(s_p, at, what, scored, at)}
            loader.metrics[f"{name}.{suffix}"] = Metric(name=f"{name}.{suffix}", type="ratio", format="percent",
                                                        inputs=inputs, expr=None,
                                                        **{**window, "description": PROVIDED[suffix]})
            continue
        if second is None:
            inputs = {**num_inputs, "denominator": use(den)}
            loader.metrics[f"{name}.{suffix}"] = Metric(name=f"{name}.{suffix}", type="ratio", format="percent",
                                                        inputs=inputs, expr=None,
                                                        **{**window, "description": PROVIDED[suffix]})
            continue
        # accuracy: (sum p over label 1 + sum 1-p over label 0) / scored rows, as a derived metric of parts
        parts = {}
        for part, (measure, flt) in (("expected_correct_positive", first), ("expected_correct_negative", second)):
            parts[part] = f"{name}.{suffix}__{part}"
            loader.metrics[parts[part]] = Metric(name=parts[part], type="simple", format="number",
                                                 inputs={"measure": loader.measure_input(measure, at, what, flt, at)},
                                                 expr=None, **{**window, "description": f"Part of {name}.{suffix}."})
        parts["n"] = f"{name}.{suffix}__scored"
        loader.metrics[parts["n"]] = Metric(name=parts["n"], type="simple", format="integer", inputs={"measure": use(den)},
                                            expr=None, **{**window, "description": f"Part of {name}.{suffix}."})
        loader.metrics[f"{name}.{suffix}"] = Metric(
            name=f"{name}.{suffix}", type="derived", format="percent", inputs={}, **{**common, "description": PROVIDED[suffix]},
            expr=exp.Div(this=exp.Paren(this=exp.Add(this=_metric_ref(parts["expected_correct_positive"]),
                                                     expression=_metric_ref(parts["expected_correct_negative"]))),
                         expression=_metric_ref(parts["n"])),
        )


def _metric_ref(name: str) -> exp.Column:
    """A derived expr's reference to another metric (a dotted name, so a quoted identifier)."""
    return exp.Column(this=exp.to_identifier(name, quoted=True))


def _entity(loader, node: Node, what: str) -> tuple[str | None, str | None]:
    """The entity model and the count measure over it (an existing one, else one added)."""
    value = node.get("entity")
    entities = [f"{m.name}.{e}" for m in loader.models.values() for e in m.entities]
    model_name, _, entity_name = str(value).partition(".") if isinstance(value, str) else ("", "", "")
    model = loader.models.get(model_name)
    if model is None or entity_name not in model.entities:
        loader.error(node.at("entity") if "entity" in node else node.location,
                     f"{what} needs entity: model.entity, the rows counted (e.g. leads.lead), got {value!r}{did_you_mean(str(value), entities, 'entities')}")
        return None, None
    entity = model.entities[entity_name]
    key = exp.column(entity.expr.name, table=exp.to_identifier(model.name, quoted=True)) if isinstance(entity.expr, exp.Column) else None
    for measure in model.measures.values():
        if measure.filter is not None or measure.fill_nulls_with is not None:
            continue
        if measure.agg == "count_distinct" and key is not None and measure.expr == key:
            return model.name, measure.qualified_name
        if measure.agg == "count" and model.unique_on(entity_name):
            return model.name, measure.qualified_name
    name = f"{entity_name}__count"
    model.measures[name] = Measure(name, model.name, "count_distinct", qualify(entity.expr, model.name), None,
                                   frozenset(), None, f"Distinct {entity_name} values.", node.location)
    return model.name, f"{model.name}.{name}"


def _column_text(loader, prediction: Node, key: str, what: str, required: bool) -> str | None:
    value = prediction.get(key)
    if value is None:
        if required:
            loader.error(prediction.location, f"{what} prediction needs {key}: model.column (e.g. predictions.label)")
        return None
    if not isinstance(value, str) or not value.strip():
        loader.error(prediction.at(key), f"{what} prediction {key} must be a column written model.column, got {value!r}")
        return None
    parsed = loader.sql(value, prediction.at(key), f"{what} prediction {key}")
    if parsed is None:
        return None
    for column in parsed.find_all(exp.Column):
        if not column.table:
            loader.error(prediction.at(key), f"{what} prediction {key}: column '{column.name}' needs its model, as model.column")
            return None
    return value


def _model_version(loader, prediction: Node, what: str) -> None:
    """model_version names the dimension a monitor slices by: it must exist (it is not used in SQL)."""
    value = prediction.get("model_version")
    if value is None:
        return
    names = [d.qualified_name for m in loader.models.values() for d in m.dimensions.values()]
    if value not in names:
        loader.error(prediction.at("model_version"), f"{what} prediction model_version: unknown dimension {value!r}{did_you_mean(str(value), names, 'dimensions')}")


def _positive(loader, node: Node, what: str, entity_known: bool) -> str | None:
    """The positive rule; by default, a ground-truth row exists for the entity."""
    truth = node.get("ground_truth")
    if not isinstance(truth, str) or truth not in loader.models:
        loader.error(node.at("ground_truth") if "ground_truth" in node else node.location,
                     f"{what} needs ground_truth: the model whose rows are the ground truth (e.g. conversions), got {truth!r}"
                     f"{did_you_mean(str(truth), loader.models, 'models')}")
        return None
    if "positive" in node:
        text = loader.text(node, "positive", what)
        return text
    if not entity_known:
        return None  # the entity is reported where it is written
    entity = str(node.get("entity", "")).partition(".")[2]
    model = loader.models[truth]
    if entity not in model.entities:
        loader.error(node.location, f"{what}: ground truth model '{truth}' has no entity '{entity}'; "
                                    f"write positive: a condition such as {truth}.<column> IS NOT NULL")
        return None
    return f"{truth}.{model.entities[entity].expr.sql()} IS NOT NULL"


def _sum_measure(loader, model_name: str, name: str, expr_text: str, at: Location, what: str,
                 description: str, filter_text: str | None = None) -> str | None:
    """Add a sum measure over the entity's model whose expression may read joined models."""
    expr, used = loader.row_filter(expr_text, at, what, model_name)
    if expr is None:
        return None
    condition, filter_used = (None, frozenset())
    if filter_text is not None:
        condition, filter_used = loader.row_filter(filter_text, at, what, model_name)
    model = loader.models[model_name]
    loader.check_reach(model_name, used, at, what)
    # The expression's models are joined like a filter's: the compiler joins filter_models.
    model.measures[name] = Measure(name, model_name, "sum", expr, condition, frozenset(used | filter_used), None,
                                   description, at)
    return f"{model_name}.{name}"


