//! Rows as the database stores them, the domain enums they carry, and (in `values`) the
//! validated values of an event and of an organisation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod patterns;
mod values;

pub use patterns::{EventTypePattern, any_matches};
pub use values::{
    DedupId, EventType, MAX_NAME_CHARS, MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH, NUMERIC_MAX_INTEGER_DIGITS,
    NUMERIC_MAX_SCALE, OrganizationName, Payload, PayloadProblem,
};

/// An organisation's plan; it sets the ingest rate limit. Stored as its lowercase name.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Free,
    Pro,
    Business,
    Enterprise,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Pro => "pro",
            Tier::Business => "business",
            Tier::Enterprise => "enterprise",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "free" => Some(Tier::Free),
            "pro" => Some(Tier::Pro),
            "business" => Some(Tier::Business),
            "enterprise" => Some(Tier::Enterprise),
            _ => None,
        }
    }

    /// Events per minute this tier may ingest.
    pub fn rate_limit_per_minute(self) -> i32 {
        match self {
            Tier::Free => 100,
            Tier::Pro => 1_000,
            Tier::Business => 10_000,
            Tier::Enterprise => 100_000,
        }
    }
}

/// Where an event stands. `failed` is the dead-letter queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum EventStatus {
    Pending,
    Delivered,
    Failed,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Pending => "pending",
            EventStatus::Delivered => "delivered",
            EventStatus::Failed => "failed",
        }
    }

    /// A status as the API spells it; `dead_letter` is a synonym of `failed`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(EventStatus::Pending),
            "delivered" => Some(EventStatus::Delivered),
            "failed" | "dead_letter" => Some(EventStatus::Failed),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub tier: Tier,
    pub rate_limit_per_minute: i32,
    pub webhook_url: Option<String>,
    pub signing_secret: Option<String>,
    pub webhook_updated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Event {
    pub id: Uuid,
    pub organization_id: Uuid,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub dedup_id: Option<String>,
    /// Selected as `payload::text`: served as stored, never decoded.
    #[sqlx(try_from = "String")]
    pub payload: Payload,
    pub status: EventStatus,
    pub attempts: i32,
    pub response_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryAttempt {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub response_status: Option<i32>,
    pub error: Option<String>,
}
