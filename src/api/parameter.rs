//! A PostgreSQL parameter value as users write it in YAML.

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parameter value, always stored as PostgreSQL's text form.
///
/// YAML users write `max_connections: 200` and `hot_standby: on`; YAML 1.1 turns the latter
/// into a boolean. Numbers and booleans are accepted and normalised to strings (`on`/`off`),
/// so the stored spec has a single, predictable shape. Lists and maps are rejected.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParameterValue(pub String);

impl ParameterValue {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ParameterValue {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for ParameterValue {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Display for ParameterValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ParameterValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ParameterValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Scalar;
        impl Visitor<'_> for Scalar {
            type Value = ParameterValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ParameterValue(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(ParameterValue(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(ParameterValue(if v { "on" } else { "off" }.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ParameterValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ParameterValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                if v.is_finite() {
                    Ok(ParameterValue(v.to_string()))
                } else {
                    Err(E::custom("a parameter value must be a finite number"))
                }
            }
        }
        d.deserialize_any(Scalar)
    }
}

impl JsonSchema for ParameterValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ParameterValue".into()
    }

    fn inline_schema() -> bool {
        true
    }

    // A structural schema cannot say "string, number or boolean" (anyOf may not carry types),
    // so the API server keeps the value as given and the webhook normalises and checks it.
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A parameter value: string, number or boolean (stored as a string).",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}
