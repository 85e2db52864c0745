//! Rows as the database stores them, the domain enums they carry, and (in `values`) the
//! validated values of an event and of an organisation; an endpoint's row and values are in
//! `endpoint`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod decode;
mod endpoint;
mod patterns;
mod values;

pub use endpoint::{
    Description, DisabledReason, Endpoint, EndpointHeaders, EventTypes, ItemProblem, MASKED_VALUE,
    MAX_DESCRIPTION_CHARS, MAX_EVENT_TYPES, MAX_HEADER_NAME_CHARS, MAX_HEADER_VALUE_CHARS, MAX_HEADERS,
    RATE_LIMIT_RANGE, REFUSED_HEADER_NAMES, REFUSED_HEADER_PREFIXES, RateLimit, RequestedHeaders,
    SENSITIVE_NAME_PARTS, is_sensitive_header, masked_without_stored_value_message, rate_limit_range_message,
};
pub use patterns::{EventTypePattern, any_matches};
pub use values::EVENT_TYPE_PATTERN;
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

/// Where an event stands, summing its deliveries up: `delivered` once acknowledged; otherwise
/// `pending` while any delivery is pending, else `failed` (the dead-letter queue) if any
/// failed, else `delivered` if any was delivered; with only skipped or cancelled deliveries, or
/// none, `pending` (waiting in the inbox). Kept in step by the database (a trigger on
/// `deliveries`).
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

#[derive(Clone, Debug)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub tier: Tier,
    pub rate_limit_per_minute: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub id: Uuid,
    pub organization_id: Uuid,
    /// The `type` column.
    pub event_type: String,
    pub dedup_id: Option<String>,
    /// Selected as `payload::text`: served as stored, never decoded.
    pub payload: Payload,
    /// The summary of its deliveries (see [`EventStatus`]).
    pub status: EventStatus,
    /// Attempts of all its deliveries.
    pub attempts: i32,
    /// The latest attempt's answer and error, over all its deliveries.
    pub response_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// Where one delivery (an event to one endpoint) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not sent yet, or a retry is scheduled.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Retries exhausted (the dead letter), or the endpoint answered `410 Gone`.
    Failed,
    /// The endpoint was disabled: never sent, recoverable.
    Skipped,
    /// The endpoint was deleted, or the event acknowledged, before it was sent.
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    /// A status as the API spells it; `dead_letter` is a synonym of `failed`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" | "dead_letter" => Some(DeliveryStatus::Failed),
            "skipped" => Some(DeliveryStatus::Skipped),
            "cancelled" => Some(DeliveryStatus::Cancelled),
            _ => None,
        }
    }
}

/// The key of a delivery: the event, the endpoint and their organisation. A delivery job
/// carries it ([`crate::jobs::DeliveryJob`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::FromRow)]
pub struct DeliveryKey {
    pub organization_id: Uuid,
    pub event_id: Uuid,
    pub endpoint_id: Uuid,
}

/// One delivery as the API shows it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub event_id: Uuid,
    pub endpoint_id: Uuid,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub response_status: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
pub struct DeliveryAttempt {
    /// The delivery's attempt number (from 1; a resend keeps counting).
    pub attempt: i32,
    /// `None` only for attempts recorded before endpoints existed of an organisation that had no
    /// webhook left when they were migrated.
    pub endpoint_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub response_status: Option<i32>,
    pub error: Option<String>,
}
