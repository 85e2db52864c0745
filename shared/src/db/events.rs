//! SQL of the `events` table.
