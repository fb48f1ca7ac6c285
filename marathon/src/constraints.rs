//! Marathon's placement constraints, `[field, OPERATOR(, value)]`, evaluated exactly as Marathon's
//! `Constraints.scala` does against the app's placed (not yet terminal) instances.

use std::collections::BTreeMap;

use agora_proto::model::{AttrValue, Attributes};
use serde::{Deserialize, Serialize};

use crate::regex::Regex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operator {
    Unique,
    Cluster,
    GroupBy,
    Like,
    Unlike,
    MaxPer,
    Is,
}

impl Operator {
    /// Operator names are upper-cased before parsing, as in Marathon.
    pub fn parse(text: &str) -> Option<Operator> {
        Some(match text.to_ascii_uppercase().as_str() {
            "UNIQUE" => Operator::Unique,
            "CLUSTER" => Operator::Cluster,
            "GROUP_BY" => Operator::GroupBy,
            "LIKE" => Operator::Like,
            "UNLIKE" => Operator::Unlike,
            "MAX_PER" => Operator::MaxPer,
            "IS" => Operator::Is,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Operator::Unique => "UNIQUE",
            Operator::Cluster => "CLUSTER",
            Operator::GroupBy => "GROUP_BY",
            Operator::Like => "LIKE",
            Operator::Unlike => "UNLIKE",
            Operator::MaxPer => "MAX_PER",
            Operator::Is => "IS",
        }
    }
}

/// One constraint; serialised as Marathon's array form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "Vec<String>", try_from = "Vec<String>")]
pub struct Constraint {
    pub field: String,
    pub operator: Operator,
    pub value: Option<String>,
}

impl From<Constraint> for Vec<String> {
    fn from(c: Constraint) -> Vec<String> {
        let mut v = vec![c.field, c.operator.name().to_string()];
        v.extend(c.value);
        v
    }
}

impl TryFrom<Vec<String>> for Constraint {
    type Error = String;
    fn try_from(v: Vec<String>) -> Result<Constraint, String> {
        if v.len() != 2 && v.len() != 3 {
            return Err("Each constraint must have either 2 or 3 fields".into());
        }
        let operator = Operator::parse(&v[1]).ok_or_else(|| format!("unknown operator {}", v[1]))?;
        Ok(Constraint { field: v[0].clone(), operator, value: v.get(2).cloned() })
    }
}

/// Where an instance sits (or an offer comes from): the agent's hostname and attributes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub hostname: String,
    pub attributes: Attributes,
}

fn attr_text(v: &AttrValue) -> String {
    match v {
        AttrValue::Text(t) => t.clone(),
        AttrValue::Scalar(f) => format!("{:.3}", f.as_f64()),
        other => other.to_string(),
    }
}

impl Placement {
    /// The value a constraint field reads: `hostname`/`@hostname` → the hostname; `@region`/`@zone` → none (no
    /// fault domains in Agora yet); anything else an attribute, as text (scalars with 3 decimals).
    pub fn field(&self, field: &str) -> Option<String> {
        match field {
            "hostname" | "@hostname" => Some(self.hostname.clone()),
            "@region" | "@zone" => None,
            name => self.attributes.get(name).map(attr_text),
        }
    }
}

impl Constraint {
    /// Validation, with Marathon's messages.
    pub fn check(&self) -> Result<(), String> {
        let v = self.value.as_deref();
        match self.operator {
            Operator::Unique if v.is_some() => Err("UNIQUE does not accept a value".into()),
            Operator::MaxPer if v.and_then(|v| v.parse::<u32>().ok()).is_none() => {
                Err("MAX_PER requires an integer value".into())
            }
            Operator::GroupBy if v.is_some_and(|v| v.parse::<u32>().is_err()) => {
                Err("GROUP BY must define an integer value or else no value at all".into())
            }
            Operator::Like | Operator::Unlike if v.is_none_or(|v| v.is_empty() || Regex::new(v).is_err()) => {
                Err("LIKE and UNLIKE require a non-empty, regular expression value".into())
            }
            Operator::Is if v.is_none_or(|v| !v.chars().all(|c| c.is_ascii_alphanumeric() || "_/.-".contains(c))) => {
                Err("IS requires a value of [a-zA-Z0-9_/.-]*".into())
            }
            _ => Ok(()),
        }
    }

    /// Whether an offer at `offer` is acceptable given the app's `placed` instances.
    pub fn accepts(&self, offer: &Placement, placed: &[&Placement]) -> bool {
        let Some(value) = offer.field(&self.field) else {
            // A missing field: only UNLIKE accepts.
            return self.operator == Operator::Unlike;
        };
        let placed_values = || placed.iter().map(|p| p.field(&self.field));
        match self.operator {
            Operator::Unique => placed_values().all(|v| v.as_deref() != Some(value.as_str())),
            Operator::Cluster => match &self.value {
                Some(want) if !want.is_empty() => &value == want,
                _ => placed_values().next().is_none_or(|first| first.as_deref() == Some(value.as_str())),
            },
            Operator::GroupBy => {
                let minimum: usize = self.value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
                let mut groups: BTreeMap<Option<String>, usize> = BTreeMap::new();
                for v in placed_values() {
                    *groups.entry(v).or_default() += 1;
                }
                let min_count = groups.values().copied().min().unwrap_or(0);
                match groups.get(&Some(value)) {
                    None => true,
                    Some(count) => groups.len() >= minimum && *count == min_count,
                }
            }
            Operator::Like => {
                self.value.as_deref().and_then(|p| Regex::new(p).ok()).is_some_and(|r| r.is_full_match(&value))
            }
            Operator::Unlike => {
                self.value.as_deref().and_then(|p| Regex::new(p).ok()).is_some_and(|r| !r.is_full_match(&value))
            }
            Operator::MaxPer => {
                let max: usize = self.value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
                placed_values().filter(|v| v.as_deref() == Some(value.as_str())).count() < max
            }
            Operator::Is => {
                let want = self.value.as_deref().unwrap_or("");
                match (value.parse::<f64>(), want.parse::<f64>()) {
                    (Ok(a), Ok(b)) => (a * 1000.0).round() == (b * 1000.0).round(),
                    _ => value == want,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: &str, attrs: &str) -> Placement {
        Placement { hostname: host.into(), attributes: Attributes::parse(attrs).unwrap() }
    }

    fn c(field: &str, op: Operator, value: Option<&str>) -> Constraint {
        Constraint { field: field.into(), operator: op, value: value.map(String::from) }
    }

    #[test]
    fn unique_hostname() {
        let a = at("a", "");
        let u = c("hostname", Operator::Unique, None);
        assert!(u.accepts(&a, &[]));
        assert!(!u.accepts(&a, &[&at("a", "")]));
        assert!(u.accepts(&a, &[&at("b", "")]));
    }

    #[test]
    fn cluster_with_and_without_value() {
        let r1 = at("a", "rack:r1");
        assert!(c("rack", Operator::Cluster, Some("r1")).accepts(&r1, &[]));
        assert!(!c("rack", Operator::Cluster, Some("r2")).accepts(&r1, &[]));
        let free = c("hostname", Operator::Cluster, None);
        assert!(free.accepts(&r1, &[]));
        assert!(free.accepts(&r1, &[&at("a", "")]));
        assert!(!free.accepts(&r1, &[&at("b", "")]));
    }

    #[test]
    fn group_by_spreads_evenly() {
        let g = c("rack", Operator::GroupBy, Some("2"));
        let r1 = at("a", "rack:r1");
        let r2 = at("b", "rack:r2");
        assert!(g.accepts(&r1, &[]));
        // One group used of two: only a new group is acceptable.
        assert!(!g.accepts(&r1, &[&r1]));
        assert!(g.accepts(&r2, &[&r1]));
        // Both used, balanced: either; unbalanced: only the smaller.
        assert!(g.accepts(&r1, &[&r1, &r2]));
        assert!(!g.accepts(&r1, &[&r1, &r1, &r2]));
        assert!(g.accepts(&r2, &[&r1, &r1, &r2]));
    }

    #[test]
    fn like_unlike_and_missing_attributes() {
        let r = at("a", "rack:rack-2");
        assert!(c("rack", Operator::Like, Some("rack-[1-3]")).accepts(&r, &[]));
        assert!(!c("rack", Operator::Unlike, Some("rack-[1-3]")).accepts(&r, &[]));
        let bare = at("b", "");
        assert!(!c("rack", Operator::Like, Some(".*")).accepts(&bare, &[]));
        assert!(c("rack", Operator::Unlike, Some(".*")).accepts(&bare, &[]));
        assert!(!c("rack", Operator::Unique, None).accepts(&bare, &[]));
    }

    #[test]
    fn max_per_and_is() {
        let r = at("a", "rack:r1;level:0.8");
        let m = c("rack", Operator::MaxPer, Some("2"));
        assert!(m.accepts(&r, &[&r]));
        assert!(!m.accepts(&r, &[&r, &r]));
        assert!(c("level", Operator::Is, Some("0.80")).accepts(&r, &[]));
        assert!(c("level", Operator::Is, Some("0.8001")).accepts(&r, &[]));
        assert!(!c("level", Operator::Is, Some("0.9")).accepts(&r, &[]));
        assert!(c("rack", Operator::Is, Some("r1")).accepts(&r, &[]));
    }

    #[test]
    fn validation_messages() {
        assert_eq!(c("a", Operator::Unique, Some("x")).check().unwrap_err(), "UNIQUE does not accept a value");
        assert_eq!(c("a", Operator::MaxPer, None).check().unwrap_err(), "MAX_PER requires an integer value");
        assert!(c("a", Operator::GroupBy, None).check().is_ok());
        assert!(c("a", Operator::Like, Some("(")).check().is_err());
    }
}
