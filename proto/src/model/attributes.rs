//! Agent attributes in Mesos's syntax: `rack:r1;zone:a;level:3;slots:[1-4];tags:{x,y}`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::resources::{Fixed, ParseError, Ranges, Value, parse_value};

/// An attribute value; as in Mesos, a number is a scalar, `[..]` ranges, `{..}` a set, anything else text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttrValue {
    Scalar(Fixed),
    Ranges(Ranges),
    Set(BTreeSet<String>),
    Text(String),
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Scalar(v) => write!(f, "{v}"),
            AttrValue::Ranges(r) => write!(f, "{r}"),
            AttrValue::Set(s) => write!(f, "{}", Value::Set(s.clone())),
            AttrValue::Text(t) => f.write_str(t),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attribute {
    pub name: String,
    pub value: AttrValue,
}

/// An agent's attributes, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attributes(pub Vec<Attribute>);

impl Attributes {
    pub fn get(&self, name: &str) -> Option<&AttrValue> {
        self.0.iter().find(|a| a.name == name).map(|a| &a.value)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Attribute> {
        self.0.iter()
    }

    /// Mesos's JSON shape in `/master/state`: `{"rack":"r1","level":3}`.
    pub fn flat_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.0
            .iter()
            .map(|a| {
                let v = match &a.value {
                    AttrValue::Scalar(s) => serde_json::to_value(s).unwrap_or_default(),
                    other => serde_json::Value::String(other.to_string()),
                };
                (a.name.clone(), v)
            })
            .collect()
    }

    /// Parses `rack:r1;zone:a`; every malformed item is reported.
    pub fn parse(text: &str) -> Result<Attributes, Vec<ParseError>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let parsed = item.split_once(':').ok_or_else(|| "expected 'name:value'".to_string()).and_then(|(n, v)| {
                let (n, v) = (n.trim(), v.trim());
                if n.is_empty() || v.is_empty() {
                    return Err("empty name or value".to_string());
                }
                let value = if v.starts_with('[') || v.starts_with('{') || v.parse::<f64>().is_ok() {
                    match parse_value(v)? {
                        Value::Scalar(s) => AttrValue::Scalar(s),
                        Value::Ranges(r) => AttrValue::Ranges(r),
                        Value::Set(s) => AttrValue::Set(s),
                    }
                } else {
                    AttrValue::Text(v.to_string())
                };
                Ok(Attribute { name: n.to_string(), value })
            });
            match parsed {
                Ok(a) => out.push(a),
                Err(reason) => errors.push(ParseError::Item { item: item.to_string(), reason }),
            }
        }
        if errors.is_empty() { Ok(Attributes(out)) } else { Err(errors) }
    }
}

impl FromStr for Attributes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Attributes::parse(s).map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_scalar_ranges_and_sets() {
        let a: Attributes = "rack:r1;level:3;slots:[1-4];tags:{x,y}".parse().unwrap();
        assert_eq!(a.get("rack"), Some(&AttrValue::Text("r1".into())));
        assert_eq!(a.get("level"), Some(&AttrValue::Scalar(Fixed::from_int(3))));
        assert_eq!(a.get("slots"), Some(&AttrValue::Ranges(Ranges::new([(1, 4)]))));
        assert_eq!(serde_json::Value::Object(a.flat_json())["rack"], "r1");
    }

    #[test]
    fn names_the_bad_item() {
        let err = Attributes::parse("rack:r1;zone").unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].to_string().contains("'zone'"));
    }
}
