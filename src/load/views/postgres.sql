-- Metric views (docs/metrics.md has the definitions), created with the tables.
-- Postgres: amounts are numeric (exact) and rounded to cents at the end; months are
-- dates (the first of the month, UTC). Views are CREATE OR REPLACE (views a user built
-- on them survive); the expensive two (customer_ltv, churn_by_month) are materialized
-- and refreshed after each load and after webhook upserts.

CREATE OR REPLACE VIEW metric_months AS
SELECT month::date AS month,
       month AT TIME ZONE 'UTC' AS starts_at,
       (month + interval '1 month') AT TIME ZONE 'UTC' AS ends_at
FROM generate_series(
       (SELECT date_trunc('month', MIN(created_at) AT TIME ZONE 'UTC') FROM subscriptions),
       date_trunc('month', now() AT TIME ZONE 'UTC'),
       interval '1 month') AS month;

CREATE OR REPLACE VIEW subscription_periods AS
SELECT s.id AS subscription_id,
       s.currency_code AS currency,
       s.created_at,
       COALESCE(s.cancelled_at, CASE WHEN s.status = 'EXPIRED' THEN s.updated_at END) AS ended_at,
       CASE WHEN s.status = 'PAUSED' THEN COALESCE(s.paused_at, s.updated_at) END AS paused_at,
       (SELECT SUM((l ->> 'price')::numeric * COALESCE((l ->> 'quantity')::numeric, 1))
          FROM jsonb_array_elements(CASE WHEN jsonb_typeof(s._record -> 'lines') = 'array'
                                         THEN s._record -> 'lines' ELSE '[]'::jsonb END) l)
         * CASE s._record #>> '{billingPolicy,interval}'
             WHEN 'DAY' THEN 365 WHEN 'WEEK' THEN 52 WHEN 'MONTH' THEN 12 WHEN 'YEAR' THEN 1
           END
         / (12 * GREATEST(COALESCE((s._record #>> '{billingPolicy,intervalCount}')::numeric, 1), 1))
         AS monthly_amount
FROM subscriptions s
WHERE s.created_at IS NOT NULL;

CREATE OR REPLACE VIEW mrr_by_month AS
SELECT m.month,
       p.currency,
       round(SUM(p.monthly_amount), 2) AS mrr,
       COUNT(*) AS active_subscriptions
FROM metric_months m
JOIN subscription_periods p
  ON p.created_at < m.ends_at
 AND (p.ended_at IS NULL OR p.ended_at >= m.ends_at)
 AND (p.paused_at IS NULL OR p.paused_at >= m.ends_at)
GROUP BY m.month, p.currency;

CREATE OR REPLACE VIEW subscription_status_by_month AS
SELECT m.month,
       COUNT(CASE WHEN (p.ended_at IS NULL OR p.ended_at >= m.ends_at)
                   AND (p.paused_at IS NULL OR p.paused_at >= m.ends_at) THEN 1 END) AS active,
       COUNT(CASE WHEN (p.ended_at IS NULL OR p.ended_at >= m.ends_at)
                   AND p.paused_at < m.ends_at THEN 1 END) AS paused,
       COUNT(CASE WHEN p.ended_at < m.ends_at THEN 1 END) AS cancelled
FROM metric_months m
LEFT JOIN subscription_periods p ON p.created_at < m.ends_at
GROUP BY m.month;

CREATE MATERIALIZED VIEW IF NOT EXISTS churn_by_month AS
SELECT m.month,
       COUNT(p.subscription_id) AS active_at_start,
       COUNT(CASE WHEN p.ended_at < m.ends_at THEN 1 END) AS churned,
       CASE WHEN COUNT(p.subscription_id) > 0 THEN
         round(COUNT(CASE WHEN p.ended_at < m.ends_at THEN 1 END)::numeric / COUNT(p.subscription_id), 4)
       END AS churn_rate
FROM metric_months m
LEFT JOIN subscription_periods p
  ON p.created_at < m.starts_at
 AND (p.ended_at IS NULL OR p.ended_at >= m.starts_at)
 AND (p.paused_at IS NULL OR p.paused_at >= m.starts_at)
GROUP BY m.month;

CREATE OR REPLACE VIEW orders_by_status AS
SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month,
       status,
       currency_code AS currency,
       COUNT(*) AS orders,
       round(SUM(total_price), 2) AS amount
FROM orders
WHERE created_at IS NOT NULL
GROUP BY 1, 2, 3;

CREATE OR REPLACE VIEW failed_payments AS
SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month,
       currency_code AS currency,
       COUNT(*) AS attempted,
       COUNT(CASE WHEN status = 'FAILED' THEN 1 END) AS failed,
       round(COALESCE(SUM(CASE WHEN status = 'FAILED' THEN total_price END), 0), 2) AS failed_amount,
       round(COUNT(CASE WHEN status = 'FAILED' THEN 1 END)::numeric / COUNT(*), 4) AS failure_rate
FROM orders
WHERE created_at IS NOT NULL AND status IN ('PAID', 'FAILED')
GROUP BY 1, 2;

CREATE MATERIALIZED VIEW IF NOT EXISTS customer_ltv AS
SELECT (o._record #>> '{customer,id}')::bigint AS customer_id,
       c.email,
       o.currency_code AS currency,
       COUNT(*) AS paid_orders,
       round(SUM(o.total_price), 2) AS revenue,
       MIN(o.created_at) AS first_order_at,
       MAX(o.created_at) AS last_order_at
FROM orders o
LEFT JOIN customers c ON c.id = (o._record #>> '{customer,id}')::bigint
WHERE o.status = 'PAID' AND o._record #>> '{customer,id}' IS NOT NULL
GROUP BY 1, 2, 3;

CREATE OR REPLACE VIEW ltv_by_currency AS
SELECT currency,
       COUNT(*) AS customers,
       round(SUM(revenue), 2) AS revenue,
       round(SUM(revenue) / COUNT(*), 2) AS average_ltv
FROM customer_ltv
GROUP BY currency;
