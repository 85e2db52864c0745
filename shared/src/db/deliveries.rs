//! SQL of the worker: deliveries.
