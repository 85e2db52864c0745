//! SQL of the `rate_limits` table.
