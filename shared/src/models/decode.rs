//! How the stored forms of [`Payload`], [`EventTypes`] and [`EndpointHeaders`] are read: each
//! decodes from the column type it is stored as, so a query names it in a type override
//! (`payload::text AS "payload: Payload"`) and the row is typed as it leaves the database.
//! Stored values were checked on the way in: a refusal here is a bug, reported as a decode error.

use std::collections::BTreeMap;

use sqlx::{
    Decode, Postgres, Type,
    error::BoxDynError,
    postgres::{PgTypeInfo, PgValueRef},
    types::Json,
};

use super::{EndpointHeaders, EventTypes, Payload};

/// `$ty` decodes from a column of type `$stored` through `TryFrom<$stored>`.
macro_rules! decode_through {
    ($ty:ty, $stored:ty) => {
        impl Type<Postgres> for $ty {
            fn type_info() -> PgTypeInfo {
                <$stored as Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <$stored as Type<Postgres>>::compatible(ty)
            }
        }

        impl<'r> Decode<'r, Postgres> for $ty {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let stored = <$stored as Decode<'r, Postgres>>::decode(value)?;
                Ok(<$ty>::try_from(stored)?)
            }
        }
    };
}

// The JSON text Postgres prints (`payload::text`).
decode_through!(Payload, String);
// The patterns (`text[]`).
decode_through!(EventTypes, Vec<String>);
// The headers object (`jsonb`).
decode_through!(EndpointHeaders, Json<BTreeMap<String, String>>);

impl From<Json<BTreeMap<String, String>>> for EndpointHeaders {
    fn from(Json(stored): Json<BTreeMap<String, String>>) -> Self {
        stored.into()
    }
}
