//! SQL of the `attempts` table.
