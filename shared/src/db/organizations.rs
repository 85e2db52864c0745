//! SQL of the `organizations` table.
