//! SQL of the worker: janitor.
