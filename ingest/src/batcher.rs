//! The micro-batching writer of accepted events (see ARCHITECTURE.md).

use sqlx::PgPool;

#[derive(Clone)]
pub struct BatchWriter {}

impl BatchWriter {
    pub fn start(_db: PgPool) -> Self {
        Self {}
    }

    pub async fn shutdown(&self) {}
}
