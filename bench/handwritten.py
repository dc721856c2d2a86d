"""A second hand-written baseline for DuckDB: the SQL a DuckDB-fluent engineer would write.

tests/reference.py is written for clarity and portability (DuckDB and PostgreSQL): ROW_NUMBER in
subqueries, and COUNT(DISTINCT ...) for every conversion count. This file is the tighter
DuckDB idiom: QUALIFY for the dedupe, COUNT(*) FILTER (WHERE ...) (leads.id is the primary key,
so no DISTINCT is needed), LEFT JOINs and GROUP BY. The rolling series keeps the form an
engineer writes first: a series of hour buckets LEFT JOINed to the leads on a time range.
Same definitions as tests/reference.py; the benchmark checks that both give equal rows.
"""

from __future__ import annotations


def _ts(as_of: str | None) -> str:
    return f"TIMESTAMP '{as_of.replace('T', ' ')}'"


def _upto(column: str, as_of: str | None) -> str:
    return f"WHERE {column} <= {_ts(as_of)}" if as_of else ""


def _conversion(as_of: str | None = None) -> str:
    """CTEs l (leads), p (latest prediction per lead), c (earliest conversion per lead)."""
    return f"""WITH l AS (
    SELECT id, created_at FROM leads {_upto('created_at', as_of)}
),
p AS (
    SELECT lead_id, model_version, label FROM prediction_events {_upto('predicted_at', as_of)}
    QUALIFY ROW_NUMBER() OVER (PARTITION BY lead_id ORDER BY predicted_at DESC) = 1
),
c AS (
    SELECT lead_id FROM conversions {_upto('converted_at', as_of)}
    QUALIFY ROW_NUMBER() OVER (PARTITION BY lead_id ORDER BY converted_at) = 1
)"""


_CORRECT = "(p.label = 1 AND c.lead_id IS NOT NULL) OR (p.label = 0 AND c.lead_id IS NULL)"
_ACCURACY = f"COUNT(*) FILTER (WHERE {_CORRECT})::DOUBLE / NULLIF(COUNT(p.lead_id), 0)"
_PRECISION = ("COUNT(*) FILTER (WHERE p.label = 1 AND c.lead_id IS NOT NULL)::DOUBLE "
              "/ NULLIF(COUNT(*) FILTER (WHERE p.label = 1), 0)")
_RECALL = ("COUNT(*) FILTER (WHERE p.label = 1 AND c.lead_id IS NOT NULL)::DOUBLE "
           "/ NULLIF(COUNT(*) FILTER (WHERE p.lead_id IS NOT NULL AND c.lead_id IS NOT NULL), 0)")
_JOIN_LEADS = "FROM l LEFT JOIN p ON p.lead_id = l.id LEFT JOIN c ON c.lead_id = l.id"


def _fraud() -> str:
    """CTEs s (latest fraud score per transaction), cb (earliest chargeback per transaction)."""
    return """WITH s AS (
    SELECT transaction_id, model_version, is_fraud FROM fraud_scores
    QUALIFY ROW_NUMBER() OVER (PARTITION BY transaction_id ORDER BY scored_at DESC) = 1
),
cb AS (
    SELECT transaction_id FROM chargebacks
    QUALIFY ROW_NUMBER() OVER (PARTITION BY transaction_id ORDER BY charged_back_at) = 1
)"""


# A formula's sum term over no rows counts 0 (the compiler and tests/reference.py agree): a day
# with false alarms but no missed fraud loses 25 per alarm, not NULL.
_FRAUD_LOSS = ("COALESCE(SUM(t.amount) FILTER (WHERE s.is_fraud = 0 AND cb.transaction_id IS NOT NULL), 0) "
               "+ 25 * COUNT(*) FILTER (WHERE s.is_fraud = 1 AND cb.transaction_id IS NULL)")
_FRAUD_PRECISION = ("COUNT(*) FILTER (WHERE s.is_fraud = 1 AND cb.transaction_id IS NOT NULL)::DOUBLE "
                    "/ NULLIF(COUNT(*) FILTER (WHERE s.is_fraud = 1), 0)")
_JOIN_TX = ("FROM transactions t LEFT JOIN s ON s.transaction_id = t.id "
            "LEFT JOIN cb ON cb.transaction_id = t.id")


def queries(as_of: str) -> dict[str, str]:
    """Hand-written DuckDB SQL per mission key (bench/mission.py)."""
    return {
        "a": f"""{_conversion()},
rates AS (
    SELECT {_ACCURACY} AS accuracy, {_PRECISION} AS "precision", {_RECALL} AS recall
    {_JOIN_LEADS}
)
SELECT accuracy, "precision", recall, 2 * "precision" * recall / NULLIF("precision" + recall, 0) AS f1
FROM rates""",
        "b": f"""{_conversion()}
SELECT p.model_version, date_trunc('hour', l.created_at) AS created_at,
       {_ACCURACY} AS accuracy, {_PRECISION} AS "precision"
{_JOIN_LEADS}
GROUP BY ALL
ORDER BY model_version NULLS LAST, created_at""",
        "c": f"""{_conversion(as_of)}
SELECT {_ACCURACY} AS accuracy_3h
{_JOIN_LEADS}
WHERE l.created_at > {_ts(as_of)} - INTERVAL 27 HOUR AND l.created_at <= {_ts(as_of)} - INTERVAL 24 HOUR""",
        # Bucket b ends at b + 1 hour; its window is [end - 1 day - 3 hours, end - 1 day).
        "d": f"""{_conversion(as_of)},
j AS (
    SELECT l.created_at, p.lead_id IS NOT NULL AS predicted, {_CORRECT} AS correct
    {_JOIN_LEADS}
),
buckets AS (
    SELECT UNNEST(generate_series(date_trunc('hour', MIN(created_at)), date_trunc('hour', MAX(created_at)),
                                  INTERVAL 1 HOUR)) AS bucket
    FROM l
)
SELECT b.bucket AS created_at,
       COUNT(*) FILTER (WHERE j.correct)::DOUBLE / NULLIF(COUNT(*) FILTER (WHERE j.predicted), 0) AS accuracy_3h
FROM buckets b
LEFT JOIN j ON j.created_at >= b.bucket - INTERVAL 26 HOUR AND j.created_at < b.bucket - INTERVAL 23 HOUR
GROUP BY b.bucket
ORDER BY b.bucket""",
        "e": f"""{_fraud()}
SELECT t.merchant_category, {_FRAUD_LOSS} AS fraud_loss
{_JOIN_TX}
GROUP BY ALL
ORDER BY merchant_category NULLS LAST""",
        "f": f"""{_fraud()}
SELECT s.model_version, date_trunc('day', t.created_at) AS created_at,
       {_FRAUD_LOSS} AS fraud_loss, {_FRAUD_PRECISION} AS fraud_precision
{_JOIN_TX}
GROUP BY ALL
ORDER BY model_version NULLS LAST, created_at""",
    }
