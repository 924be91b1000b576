-- Metric views (docs/metrics.md has the definitions). Replaced on every load.
-- SQLite: amounts are computed as doubles from the exact decimal text and rounded to
-- cents at the end (exact for totals below about 10^13); months are 'YYYY-MM-01'.
DROP VIEW IF EXISTS ltv_by_currency;
DROP VIEW IF EXISTS customer_ltv;
DROP VIEW IF EXISTS failed_payments;
DROP VIEW IF EXISTS orders_by_status;
DROP VIEW IF EXISTS churn_by_month;
DROP VIEW IF EXISTS subscription_status_by_month;
DROP VIEW IF EXISTS mrr_by_month;
DROP VIEW IF EXISTS subscription_periods;
DROP VIEW IF EXISTS metric_months;

CREATE VIEW metric_months AS
WITH RECURSIVE m(month) AS (
    SELECT date(MIN(created_at), 'start of month') FROM subscriptions
    UNION ALL
    SELECT date(month, '+1 month') FROM m WHERE month < date('now', 'start of month')
)
SELECT month,
       month || 'T00:00:00.000Z' AS starts_at,
       date(month, '+1 month') || 'T00:00:00.000Z' AS ends_at
FROM m
WHERE month IS NOT NULL;

CREATE VIEW subscription_periods AS
SELECT s.id AS subscription_id,
       s.currency_code AS currency,
       s.created_at,
       COALESCE(s.cancelled_at, CASE WHEN s.status = 'EXPIRED' THEN s.updated_at END) AS ended_at,
       CASE WHEN s.status = 'PAUSED' THEN COALESCE(s.paused_at, s.updated_at) END AS paused_at,
       (SELECT SUM(CAST(json_extract(l.value, '$.price') AS REAL)
                   * COALESCE(json_extract(l.value, '$.quantity'), 1))
          FROM json_each(s._record, '$.lines') l)
         * CASE json_extract(s._record, '$.billingPolicy.interval')
             WHEN 'DAY' THEN 365 WHEN 'WEEK' THEN 52 WHEN 'MONTH' THEN 12 WHEN 'YEAR' THEN 1
           END
         / (12.0 * MAX(COALESCE(json_extract(s._record, '$.billingPolicy.intervalCount'), 1), 1))
         AS monthly_amount
FROM subscriptions s
WHERE s.created_at IS NOT NULL;

CREATE VIEW mrr_by_month AS
SELECT m.month,
       p.currency,
       printf('%.2f', SUM(p.monthly_amount)) AS mrr,
       COUNT(*) AS active_subscriptions
FROM metric_months m
JOIN subscription_periods p
  ON p.created_at < m.ends_at
 AND (p.ended_at IS NULL OR p.ended_at >= m.ends_at)
 AND (p.paused_at IS NULL OR p.paused_at >= m.ends_at)
GROUP BY m.month, p.currency;

CREATE VIEW subscription_status_by_month AS
SELECT m.month,
       COUNT(CASE WHEN (p.ended_at IS NULL OR p.ended_at >= m.ends_at)
                   AND (p.paused_at IS NULL OR p.paused_at >= m.ends_at) THEN 1 END) AS active,
       COUNT(CASE WHEN (p.ended_at IS NULL OR p.ended_at >= m.ends_at)
                   AND p.paused_at < m.ends_at THEN 1 END) AS paused,
       COUNT(CASE WHEN p.ended_at < m.ends_at THEN 1 END) AS cancelled
FROM metric_months m
LEFT JOIN subscription_periods p ON p.created_at < m.ends_at
GROUP BY m.month;

CREATE VIEW churn_by_month AS
SELECT m.month,
       COUNT(p.subscription_id) AS active_at_start,
       COUNT(CASE WHEN p.ended_at < m.ends_at THEN 1 END) AS churned,
       CASE WHEN COUNT(p.subscription_id) > 0 THEN
         printf('%.4f', 1.0 * COUNT(CASE WHEN p.ended_at < m.ends_at THEN 1 END) / COUNT(p.subscription_id))
       END AS churn_rate
FROM metric_months m
LEFT JOIN subscription_periods p
  ON p.created_at < m.starts_at
 AND (p.ended_at IS NULL OR p.ended_at >= m.starts_at)
 AND (p.paused_at IS NULL OR p.paused_at >= m.starts_at)
GROUP BY m.month;

CREATE VIEW orders_by_status AS
SELECT substr(created_at, 1, 7) || '-01' AS month,
       status,
       currency_code AS currency,
       COUNT(*) AS orders,
       printf('%.2f', SUM(CAST(total_price AS REAL))) AS amount
FROM orders
WHERE created_at IS NOT NULL
GROUP BY 1, 2, 3;

CREATE VIEW failed_payments AS
SELECT substr(created_at, 1, 7) || '-01' AS month,
       currency_code AS currency,
       COUNT(*) AS attempted,
       COUNT(CASE WHEN status = 'FAILED' THEN 1 END) AS failed,
       printf('%.2f', COALESCE(SUM(CASE WHEN status = 'FAILED' THEN CAST(total_price AS REAL) END), 0)) AS failed_amount,
       printf('%.4f', 1.0 * COUNT(CASE WHEN status = 'FAILED' THEN 1 END) / COUNT(*)) AS failure_rate
FROM orders
WHERE created_at IS NOT NULL AND status IN ('PAID', 'FAILED')
GROUP BY 1, 2;

CREATE VIEW customer_ltv AS
SELECT json_extract(o._record, '$.customer.id') AS customer_id,
       c.email,
       o.currency_code AS currency,
       COUNT(*) AS paid_orders,
       printf('%.2f', SUM(CAST(o.total_price AS REAL))) AS revenue,
       MIN(o.created_at) AS first_order_at,
       MAX(o.created_at) AS last_order_at
FROM orders o
LEFT JOIN customers c ON c.id = json_extract(o._record, '$.customer.id')
WHERE o.status = 'PAID' AND json_extract(o._record, '$.customer.id') IS NOT NULL
GROUP BY 1, 2, 3;

CREATE VIEW ltv_by_currency AS
SELECT currency,
       COUNT(*) AS customers,
       printf('%.2f', SUM(CAST(revenue AS REAL))) AS revenue,
       printf('%.2f', SUM(CAST(revenue AS REAL)) / COUNT(*)) AS average_ltv
FROM customer_ltv
GROUP BY currency;
