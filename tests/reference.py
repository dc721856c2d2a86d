"""Hand-written reference SQL for the mission metrics: the ground truth the compiler is tested against.

Written by hand from the metric definitions, independently of metrics_layer (nothing is imported
from it). Every function returns one SQL string that runs unchanged on DuckDB and PostgreSQL over
the demo tables (metrics_layer/demo_data.py) and orders its rows by its dimension columns.

Definitions
-----------
- Dedupe before joining: `predictions` = latest prediction_events row per lead_id (by
  predicted_at); `conv` = earliest conversions row per lead_id (by converted_at); `scores` =
  latest fraud_scores row per transaction_id (by scored_at); `cb` = earliest chargebacks row per
  transaction_id (by charged_back_at). LEFT JOINs from leads / transactions.
- `as_of` T: every table is first filtered to rows whose own time column is <= T, and the dedupe
  happens after that filter.
- Conversion metrics count distinct leads.id; fraud metrics count transactions.
- Ratios are CAST(num AS DOUBLE PRECISION) / NULLIF(den, 0); f1 = 2*p*r / NULLIF(p + r, 0).
- Time buckets are date_trunc(grain, created_at); a bucket with no rows is absent, except in the
  rolling (trailing-window) series, whose buckets run from the first to the last lead's bucket.

`as_of` may be a datetime.datetime or a 'YYYY-MM-DD HH:MM:SS' string. `schema`, when given,
qualifies every table name (e.g. a test schema in PostgreSQL); otherwise names are unqualified.
NULL dimension values (utm_source, model_version of unpredicted leads / unscored transactions)
form their own row, ordered last.
"""

from __future__ import annotations

import datetime as dt

GRAIN_INTERVALS = {
    "minute": "1 minute",
    "hour": "1 hour",
    "day": "1 day",
    "week": "7 days",
    "month": "1 month",
    "quarter": "3 months",
    "year": "1 year",
}


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

def ts(value: dt.datetime | str) -> str:
    """A TIMESTAMP literal."""
    if isinstance(value, dt.datetime):
        value = value.isoformat(sep=" ")
    return f"TIMESTAMP '{value}'"


def _table(name: str, schema: str | None) -> str:
    return f"{schema}.{name}" if schema else name


def _upto(column: str, as_of) -> str:
    """The as_of filter on a table's own time column ('' when there is no as_of)."""
    return f" WHERE {column} <= {ts(as_of)}" if as_of is not None else ""


def _ratio(num: str, den: str) -> str:
    return f"CAST({num} AS DOUBLE PRECISION) / NULLIF({den}, 0)"


# ---------------------------------------------------------------------------------------------
# Conversion (lead scoring) model
# ---------------------------------------------------------------------------------------------

def _conversion_ctes(as_of, schema) -> str:
    """CTEs leads_f, predictions, conv and joined: one row per (as_of-filtered) lead."""
    return f"""WITH leads_f AS (
    SELECT id, created_at, utm_source
    FROM {_table('leads', schema)}{_upto('created_at', as_of)}
),
predictions AS (
    SELECT lead_id, model_version, label
    FROM (
        SELECT lead_id, model_version, label,
               ROW_NUMBER() OVER (PARTITION BY lead_id ORDER BY predicted_at DESC) AS rn
        FROM {_table('prediction_events', schema)}{_upto('predicted_at', as_of)}
    ) ranked
    WHERE rn = 1
),
conv AS (
    SELECT lead_id
    FROM (
        SELECT lead_id,
               ROW_NUMBER() OVER (PARTITION BY lead_id ORDER BY converted_at ASC) AS rn
        FROM {_table('conversions', schema)}{_upto('converted_at', as_of)}
    ) ranked
    WHERE rn = 1
),
joined AS (
    SELECT l.id, l.created_at, l.utm_source,
           p.model_version, p.label,
           (p.lead_id IS NOT NULL) AS predicted,
           (c.lead_id IS NOT NULL) AS converted
    FROM leads_f l
    LEFT JOIN predictions p ON p.lead_id = l.id
    LEFT JOIN conv c ON c.lead_id = l.id
)"""


# Counts over `joined` (or anything with its columns), all of distinct leads.
N_LEADS = "COUNT(DISTINCT id)"
N_PREDICTED = "COUNT(DISTINCT CASE WHEN predicted THEN id END)"
N_CORRECT = ("COUNT(DISTINCT CASE WHEN (label = 1 AND converted) OR (label = 0 AND NOT converted) "
             "THEN id END)")
N_TRUE_POS = "COUNT(DISTINCT CASE WHEN label = 1 AND converted THEN id END)"
N_PRED_POS = "COUNT(DISTINCT CASE WHEN label = 1 THEN id END)"
N_ACTUAL_POS = "COUNT(DISTINCT CASE WHEN predicted AND converted THEN id END)"
N_CONVERTED = "COUNT(DISTINCT CASE WHEN converted THEN id END)"

ACCURACY = _ratio(N_CORRECT, N_PREDICTED)
PRECISION = _ratio(N_TRUE_POS, N_PRED_POS)
RECALL = _ratio(N_TRUE_POS, N_ACTUAL_POS)
CONVERSION_RATE = _ratio(N_CONVERTED, N_LEADS)
F1_FROM_COLUMNS = '2 * "precision" * recall / NULLIF("precision" + recall, 0)'


def conversion_metrics(as_of=None, schema=None) -> str:
    """1. Overall: lead_count, accuracy, precision, recall, f1, conversion_rate (one row)."""
    return f"""{_conversion_ctes(as_of, schema)},
agg AS (
    SELECT {N_LEADS} AS lead_count,
           {ACCURACY} AS accuracy,
           {PRECISION} AS "precision",
           {RECALL} AS recall,
           {CONVERSION_RATE} AS conversion_rate
    FROM joined
)
SELECT lead_count, accuracy, "precision", recall,
       {F1_FROM_COLUMNS} AS f1,
       conversion_rate
FROM agg"""


def conversion_metrics_by_model_version(as_of=None, schema=None) -> str:
    """2. By predictions.model_version: model_version, accuracy, precision, recall, f1."""
    return f"""{_conversion_ctes(as_of, schema)},
agg AS (
    SELECT model_version,
           {ACCURACY} AS accuracy,
           {PRECISION} AS "precision",
           {RECALL} AS recall
    FROM joined
    GROUP BY model_version
)
SELECT model_version, accuracy, "precision", recall,
       {F1_FROM_COLUMNS} AS f1
FROM agg
ORDER BY model_version NULLS LAST"""


def conversion_metrics_by_time(grain: str = "hour", as_of=None, schema=None) -> str:
    """3. By date_trunc(grain, leads.created_at): created_at, accuracy, precision, recall."""
    return f"""{_conversion_ctes(as_of, schema)},
bucketed AS (
    SELECT joined.*, date_trunc('{grain}', joined.created_at) AS bucket
    FROM joined
)
SELECT bucket AS created_at,
       {ACCURACY} AS accuracy,
       {PRECISION} AS "precision",
       {RECALL} AS recall
FROM bucketed
GROUP BY bucket
ORDER BY bucket"""


def conversion_metrics_by_hour(as_of=None, schema=None) -> str:
    """3. accuracy, precision, recall by hour of leads.created_at."""
    return conversion_metrics_by_time("hour", as_of, schema)


def accuracy_precision_by_model_version_and_time(grain: str = "hour", as_of=None, schema=None) -> str:
    """4. By model_version and date_trunc(grain, created_at): model_version, created_at, accuracy, precision."""
    return f"""{_conversion_ctes(as_of, schema)},
bucketed AS (
    SELECT joined.*, date_trunc('{grain}', joined.created_at) AS bucket
    FROM joined
)
SELECT model_version,
       bucket AS created_at,
       {ACCURACY} AS accuracy,
       {PRECISION} AS "precision"
FROM bucketed
GROUP BY model_version, bucket
ORDER BY model_version NULLS LAST, bucket"""


def accuracy_precision_by_model_version_and_hour(as_of=None, schema=None) -> str:
    """4. accuracy and precision by model_version and hour."""
    return accuracy_precision_by_model_version_and_time("hour", as_of, schema)


def trailing_accuracy_at(as_of, window: str = "3 hours", delay: str = "1 day",
                         column: str = "accuracy_3h", schema=None) -> str:
    """5. Trailing-window accuracy as one current value at E = as_of.

    Leads with created_at in (E - delay - window, E - delay]: the window includes its end,
    as `created_at > NOW() - INTERVAL '3 hours'` does; everything as_of-filtered.
    """
    e = ts(as_of)
    return f"""{_conversion_ctes(as_of, schema)}
SELECT {ACCURACY} AS {column}
FROM joined
WHERE created_at > {e} - INTERVAL '{delay}' - INTERVAL '{window}'
  AND created_at <= {e} - INTERVAL '{delay}'"""


def accuracy_3h_at(as_of, schema=None) -> str:
    """5. accuracy_3h (W = 3 hours, D = 1 day) at as_of: one column accuracy_3h."""
    return trailing_accuracy_at(as_of, "3 hours", "1 day", "accuracy_3h", schema)


def trailing_accuracy_series(grain: str = "hour", window: str = "3 hours", delay: str = "1 day",
                             column: str = "accuracy_3h", as_of=None, schema=None, buckets_where: str = "TRUE") -> str:
    """6. Trailing-window accuracy as a rolling series: created_at, <column>.

    Buckets: every grain from date_trunc(grain, min(created_at)) to date_trunc(grain,
    max(created_at)) over the as_of-filtered leads, empty ones included. Bucket b ends at
    E = b + 1 grain and takes the leads with created_at in [E - delay - window, E - delay);
    a bucket whose window holds no predicted lead has NULL. `buckets_where` (SQL over `bucket`)
    picks the buckets returned; their windows still read every lead.
    """
    step = GRAIN_INTERVALS[grain]
    return f"""{_conversion_ctes(as_of, schema)},
bounds AS (
    SELECT date_trunc('{grain}', MIN(created_at)) AS lo,
           date_trunc('{grain}', MAX(created_at)) AS hi
    FROM leads_f
),
buckets AS (
    SELECT s.bucket
    FROM bounds, generate_series(bounds.lo, bounds.hi, INTERVAL '{step}') AS s(bucket)
    WHERE {buckets_where}
)
SELECT b.bucket AS created_at,
       {ACCURACY} AS {column}
FROM buckets b
LEFT JOIN joined j
       ON j.created_at >= b.bucket + INTERVAL '{step}' - INTERVAL '{delay}' - INTERVAL '{window}'
      AND j.created_at < b.bucket + INTERVAL '{step}' - INTERVAL '{delay}'
GROUP BY b.bucket
ORDER BY b.bucket"""


def accuracy_3h_by_hour(as_of=None, schema=None) -> str:
    """6. accuracy_3h as a rolling hourly series: created_at, accuracy_3h."""
    return trailing_accuracy_series("hour", "3 hours", "1 day", "accuracy_3h", as_of, schema)


def conversion_by_utm_source(as_of=None, schema=None) -> str:
    """7. By leads.utm_source: utm_source, conversion_rate, lead_count."""
    return f"""{_conversion_ctes(as_of, schema)}
SELECT utm_source,
       {CONVERSION_RATE} AS conversion_rate,
       {N_LEADS} AS lead_count
FROM joined
GROUP BY utm_source
ORDER BY utm_source NULLS LAST"""


# ---------------------------------------------------------------------------------------------
# Fraud model
# ---------------------------------------------------------------------------------------------

def _fraud_ctes(as_of, schema) -> str:
    """CTEs transactions_f, scores, cb and joined: one row per (as_of-filtered) transaction."""
    return f"""WITH transactions_f AS (
    SELECT id, created_at, merchant_category, amount
    FROM {_table('transactions', schema)}{_upto('created_at', as_of)}
),
scores AS (
    SELECT transaction_id, model_version, is_fraud
    FROM (
        SELECT transaction_id, model_version, is_fraud,
               ROW_NUMBER() OVER (PARTITION BY transaction_id ORDER BY scored_at DESC) AS rn
        FROM {_table('fraud_scores', schema)}{_upto('scored_at', as_of)}
    ) ranked
    WHERE rn = 1
),
cb AS (
    SELECT transaction_id
    FROM (
        SELECT transaction_id,
               ROW_NUMBER() OVER (PARTITION BY transaction_id ORDER BY charged_back_at ASC) AS rn
        FROM {_table('chargebacks', schema)}{_upto('charged_back_at', as_of)}
    ) ranked
    WHERE rn = 1
),
joined AS (
    SELECT t.id, t.created_at, t.merchant_category, t.amount,
           s.model_version, s.is_fraud,
           (s.transaction_id IS NOT NULL) AS scored,
           (c.transaction_id IS NOT NULL) AS charged_back
    FROM transactions_f t
    LEFT JOIN scores s ON s.transaction_id = t.id
    LEFT JOIN cb c ON c.transaction_id = t.id
)"""


MISSED_FRAUD_AMOUNT = "SUM(CASE WHEN is_fraud = 0 AND charged_back THEN amount END)"
FALSE_ALARMS = "COUNT(CASE WHEN is_fraud = 1 AND NOT charged_back THEN 1 END)"
# In a group that exists, a sum over no rows is 0 inside a formula (no missed fraud costs 0).
FRAUD_LOSS = f"COALESCE({MISSED_FRAUD_AMOUNT}, 0) + 25 * {FALSE_ALARMS}"
N_FRAUD_TRUE_POS = "COUNT(CASE WHEN is_fraud = 1 AND charged_back THEN 1 END)"
FRAUD_PRECISION = _ratio(N_FRAUD_TRUE_POS, "COUNT(CASE WHEN is_fraud = 1 THEN 1 END)")
FRAUD_RECALL = _ratio(N_FRAUD_TRUE_POS, "COUNT(CASE WHEN scored AND charged_back THEN 1 END)")


def fraud_metrics(as_of=None, schema=None) -> str:
    """8. Overall: missed_fraud_amount, false_alarms, fraud_loss, fraud_precision, fraud_recall."""
    return f"""{_fraud_ctes(as_of, schema)}
SELECT {MISSED_FRAUD_AMOUNT} AS missed_fraud_amount,
       {FALSE_ALARMS} AS false_alarms,
       {FRAUD_LOSS} AS fraud_loss,
       {FRAUD_PRECISION} AS fraud_precision,
       {FRAUD_RECALL} AS fraud_recall
FROM joined"""


def fraud_by_merchant_category(as_of=None, schema=None) -> str:
    """9. By merchant_category: merchant_category, fraud_loss, missed_fraud_amount, false_alarms."""
    return f"""{_fraud_ctes(as_of, schema)}
SELECT merchant_category,
       {FRAUD_LOSS} AS fraud_loss,
       {MISSED_FRAUD_AMOUNT} AS missed_fraud_amount,
       {FALSE_ALARMS} AS false_alarms
FROM joined
GROUP BY merchant_category
ORDER BY merchant_category NULLS LAST"""


def fraud_by_time(grain: str = "hour", as_of=None, schema=None) -> str:
    """11. By date_trunc(grain, transactions.created_at): created_at, fraud_loss, missed_fraud_amount,
    false_alarms. Many hours have false alarms and no missed fraud: their loss is 25 per alarm."""
    return f"""{_fraud_ctes(as_of, schema)}
SELECT date_trunc('{grain}', created_at) AS created_at,
       {FRAUD_LOSS} AS fraud_loss,
       {MISSED_FRAUD_AMOUNT} AS missed_fraud_amount,
       {FALSE_ALARMS} AS false_alarms
FROM joined
GROUP BY 1
ORDER BY 1"""


def fraud_by_model_version_and_time(grain: str = "day", as_of=None, schema=None) -> str:
    """10. By scores.model_version and date_trunc(grain, transactions.created_at):
    model_version, created_at, fraud_loss, fraud_precision."""
    return f"""{_fraud_ctes(as_of, schema)},
bucketed AS (
    SELECT joined.*, date_trunc('{grain}', joined.created_at) AS bucket
    FROM joined
)
SELECT model_version,
       bucket AS created_at,
       {FRAUD_LOSS} AS fraud_loss,
       {FRAUD_PRECISION} AS fraud_precision
FROM bucketed
GROUP BY model_version, bucket
ORDER BY model_version NULLS LAST, bucket"""


def fraud_by_model_version_and_day(as_of=None, schema=None) -> str:
    """10. fraud_loss and fraud_precision by fraud model version and day."""
    return fraud_by_model_version_and_time("day", as_of, schema)


def all_queries(as_of, schema=None) -> dict[str, str]:
    """Every mission query, by function name; as_of is required only by accuracy_3h_at."""
    return {
        "conversion_metrics": conversion_metrics(as_of, schema),
        "conversion_metrics_no_as_of": conversion_metrics(None, schema),
        "conversion_metrics_by_model_version": conversion_metrics_by_model_version(as_of, schema),
        "conversion_metrics_by_hour": conversion_metrics_by_hour(as_of, schema),
        "conversion_metrics_by_hour_no_as_of": conversion_metrics_by_hour(None, schema),
        "accuracy_precision_by_model_version_and_hour": accuracy_precision_by_model_version_and_hour(as_of, schema),
        "accuracy_3h_at": accuracy_3h_at(as_of, schema),
        "accuracy_3h_by_hour": accuracy_3h_by_hour(as_of, schema),
        "accuracy_3h_by_hour_no_as_of": accuracy_3h_by_hour(None, schema),
        "conversion_by_utm_source": conversion_by_utm_source(as_of, schema),
        "fraud_metrics": fraud_metrics(as_of, schema),
        "fraud_metrics_no_as_of": fraud_metrics(None, schema),
        "fraud_by_merchant_category": fraud_by_merchant_category(as_of, schema),
        "fraud_by_model_version_and_day": fraud_by_model_version_and_day(as_of, schema),
    }
