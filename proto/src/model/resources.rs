//! Resources in Mesos's model: named scalars, ranges and sets, optionally reserved for a role, with exact
//! fixed-point arithmetic (three decimals, as Mesos) so that `0.1 + 0.2` is exactly `0.3`.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The role of unreserved resources.
pub const UNRESERVED: &str = "*";

/// A scalar in thousandths: `Fixed::from_f64(0.1)` is exactly 100 milli-units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fixed(i64);

impl Fixed {
    pub const ZERO: Fixed = Fixed(0);
    const SCALE: i64 = 1000;

    /// Rounds to the nearest thousandth, as Mesos does for every scalar it receives.
    pub fn from_f64(v: f64) -> Fixed {
        Fixed((v * Self::SCALE as f64).round() as i64)
    }

    pub const fn from_int(v: i64) -> Fixed {
        Fixed(v * Self::SCALE)
    }

    pub const fn from_milli(m: i64) -> Fixed {
        Fixed(m)
    }

    pub fn milli(self) -> i64 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Self::SCALE as f64
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub fn saturating_sub(self, o: Fixed) -> Fixed {
        Fixed((self.0 - o.0).max(0))
    }

    /// `self × factor`, rounded to the nearest thousandth.
    pub fn mul_f64(self, factor: f64) -> Fixed {
        Fixed::from_f64(self.as_f64() * factor)
    }
}

impl Add for Fixed {
    type Output = Fixed;
    fn add(self, o: Fixed) -> Fixed {
        Fixed(self.0 + o.0)
    }
}
impl AddAssign for Fixed {
    fn add_assign(&mut self, o: Fixed) {
        self.0 += o.0;
    }
}
impl Sub for Fixed {
    type Output = Fixed;
    fn sub(self, o: Fixed) -> Fixed {
        Fixed(self.0 - o.0)
    }
}
impl SubAssign for Fixed {
    fn sub_assign(&mut self, o: Fixed) {
        self.0 -= o.0;
    }
}

impl fmt::Display for Fixed {
    /// Shortest exact decimal: `2`, `0.1`, `1.25`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (int, frac) = (abs / 1000, abs % 1000);
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{sign}{int}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl Serialize for Fixed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 1000 == 0 { s.serialize_i64(self.0 / 1000) } else { s.serialize_f64(self.as_f64()) }
    }
}

impl<'de> Deserialize<'de> for Fixed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        f64::deserialize(d).map(Fixed::from_f64)
    }
}

/// A set of disjoint, sorted, inclusive ranges, e.g. `[31000-31005, 31010-32000]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub fn new(ranges: impl IntoIterator<Item = (u64, u64)>) -> Ranges {
        let mut r = Ranges(Vec::new());
        for (b, e) in ranges {
            r.add_range(b.min(e), b.max(e));
        }
        r
    }

    pub fn single(value: u64) -> Ranges {
        Ranges(vec![(value, value)])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().copied()
    }

    /// Every value in the ranges, in order.
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().flat_map(|&(b, e)| b..=e)
    }

    /// How many values the ranges hold.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(b, e)| e - b + 1).sum()
    }

    fn add_range(&mut self, b: u64, e: u64) {
        // Merge with every range that overlaps or touches [b, e].
        let mut nb = b;
        let mut ne = e;
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut placed = false;
        for &(rb, re) in &self.0 {
            if re.saturating_add(1) < nb {
                out.push((rb, re));
            } else if ne.saturating_add(1) < rb {
                if !placed {
                    out.push((nb, ne));
                    placed = true;
                }
                out.push((rb, re));
            } else {
                nb = nb.min(rb);
                ne = ne.max(re);
            }
        }
        if !placed {
            out.push((nb, ne));
        }
        self.0 = out;
    }

    pub fn add(&mut self, other: &Ranges) {
        for &(b, e) in &other.0 {
            self.add_range(b, e);
        }
    }

    pub fn contains(&self, other: &Ranges) -> bool {
        other.0.iter().all(|&(b, e)| self.0.iter().any(|&(rb, re)| rb <= b && e <= re))
    }

    pub fn contains_value(&self, v: u64) -> bool {
        self.0.iter().any(|&(b, e)| b <= v && v <= e)
    }

    /// Removes `other` from `self`; values of `other` not in `self` are ignored.
    pub fn subtract(&mut self, other: &Ranges) {
        for &(b, e) in &other.0 {
            let mut out = Vec::with_capacity(self.0.len() + 1);
            for &(rb, re) in &self.0 {
                if re < b || e < rb {
                    out.push((rb, re));
                    continue;
                }
                if rb < b {
                    out.push((rb, b - 1));
                }
                if e < re {
                    out.push((e + 1, re));
                }
            }
            self.0 = out;
        }
    }
}

impl fmt::Display for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (b, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{b}-{e}")?;
        }
        f.write_str("]")
    }
}

/// The value of one resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    Scalar(Fixed),
    Ranges(Ranges),
    Set(BTreeSet<String>),
}

impl Value {
    fn kind(&self) -> u8 {
        match self {
            Value::Scalar(_) => 0,
            Value::Ranges(_) => 1,
            Value::Set(_) => 2,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Value::Scalar(v) => v.is_zero(),
            Value::Ranges(r) => r.is_empty(),
            Value::Set(s) => s.is_empty(),
        }
    }

    fn add(&mut self, other: &Value) {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => *a += *b,
            (Value::Ranges(a), Value::Ranges(b)) => a.add(b),
            (Value::Set(a), Value::Set(b)) => a.extend(b.iter().cloned()),
            _ => unreachable!("values of one (name, role, kind) key always share a kind"),
        }
    }

    fn contains(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => a >= b,
            (Value::Ranges(a), Value::Ranges(b)) => a.contains(b),
            (Value::Set(a), Value::Set(b)) => b.is_subset(a),
            _ => false,
        }
    }

    fn subtract(&mut self, other: &Value) {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => *a = a.saturating_sub(*b),
            (Value::Ranges(a), Value::Ranges(b)) => a.subtract(b),
            (Value::Set(a), Value::Set(b)) => a.retain(|x| !b.contains(x)),
            _ => {}
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Scalar(v) => write!(f, "{v}"),
            Value::Ranges(r) => write!(f, "{r}"),
            Value::Set(s) => {
                f.write_str("{")?;
                for (i, item) in s.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(item)?;
                }
                f.write_str("}")
            }
        }
    }
}

/// One resource: a name, a role (`*` when unreserved) and a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    pub role: String,
    pub value: Value,
}

impl Resource {
    pub fn scalar(name: &str, v: f64) -> Resource {
        Resource { name: name.to_string(), role: UNRESERVED.to_string(), value: Value::Scalar(Fixed::from_f64(v)) }
    }

    pub fn ranges(name: &str, ranges: impl IntoIterator<Item = (u64, u64)>) -> Resource {
        Resource { name: name.to_string(), role: UNRESERVED.to_string(), value: Value::Ranges(Ranges::new(ranges)) }
    }

    pub fn reserved(mut self, role: &str) -> Resource {
        self.role = role.to_string();
        self
    }

    pub fn is_unreserved(&self) -> bool {
        self.role == UNRESERVED
    }

    fn key(&self) -> (&str, &str, u8) {
        (&self.name, &self.role, self.value.kind())
    }
}

/// A bag of resources, kept normalised: one entry per (name, role, kind), sorted, no empty entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources(Vec<Resource>);

/// Why a resource string could not be parsed; names the offending item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("resource item '{item}' is malformed: {reason}")]
    Item { item: String, reason: String },
}

impl Resources {
    pub fn new() -> Resources {
        Resources(Vec::new())
    }

    pub fn from_vec(items: impl IntoIterator<Item = Resource>) -> Resources {
        let mut r = Resources::new();
        for item in items {
            r.add_one(item);
        }
        r
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.0.iter()
    }

    pub fn into_vec(self) -> Vec<Resource> {
        self.0
    }

    fn add_one(&mut self, item: Resource) {
        if item.value.is_empty() {
            return;
        }
        match self.0.binary_search_by(|r| r.key().cmp(&item.key())) {
            Ok(i) => self.0[i].value.add(&item.value),
            Err(i) => self.0.insert(i, item),
        }
    }

    pub fn add(&mut self, other: &Resources) {
        for item in &other.0 {
            self.add_one(item.clone());
        }
    }

    /// True when every resource of `other` is within `self` (same name, role and kind).
    pub fn contains(&self, other: &Resources) -> bool {
        // Both are sorted by key: one walk compares each key once (the allocator checks every refusal filter it
        // meets with this).
        let mut mine = self.0.iter();
        other.0.iter().all(|o| {
            let key = o.key();
            mine.by_ref()
                .map(|r| (r.key().cmp(&key), r))
                .find(|(order, _)| order.is_ge())
                .is_some_and(|(order, r)| order.is_eq() && r.value.contains(&o.value))
        })
    }

    /// Removes `other` (which should be contained in `self`; what is not is ignored, scalars floor at zero).
    pub fn subtract(&mut self, other: &Resources) {
        for o in &other.0 {
            if let Ok(i) = self.0.binary_search_by(|r| r.key().cmp(&o.key())) {
                self.0[i].value.subtract(&o.value);
                if self.0[i].value.is_empty() {
                    self.0.remove(i);
                }
            }
        }
    }

    /// `self - other` when `other` is contained in `self`, otherwise `None`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        let mut r = self.clone();
        r.subtract(other);
        Some(r)
    }

    /// The sum of the scalar `name` over all roles.
    pub fn scalar(&self, name: &str) -> Fixed {
        self.0
            .iter()
            .filter(|r| r.name == name)
            .filter_map(|r| match r.value {
                Value::Scalar(v) => Some(v),
                _ => None,
            })
            .fold(Fixed::ZERO, |a, b| a + b)
    }

    /// The union of the ranges `name` over all roles.
    pub fn ranges(&self, name: &str) -> Ranges {
        let mut out = Ranges::default();
        for r in self.0.iter().filter(|r| r.name == name) {
            if let Value::Ranges(rs) = &r.value {
                out.add(rs);
            }
        }
        out
    }

    /// What a framework in `role` may use: unreserved resources plus those reserved for `role`.
    pub fn allocatable_to(&self, role: &str) -> Resources {
        Resources(self.0.iter().filter(|r| r.is_unreserved() || r.role == role).cloned().collect())
    }

    /// Only the resources reserved for `role` (or unreserved, for `*`).
    pub fn reserved_for(&self, role: &str) -> Resources {
        Resources(self.0.iter().filter(|r| r.role == role).cloned().collect())
    }

    /// The names of all scalar resources present.
    pub fn scalar_names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter(|r| matches!(r.value, Value::Scalar(_))).map(|r| r.name.as_str())
    }

    /// Mesos's legacy flat JSON map: `{"cpus":2,"disk":4096,"mem":1024,"ports":"[31000-32000]"}`, summed over roles.
    pub fn flat_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for name in ["cpus", "gpus", "mem", "disk"] {
            out.insert(name.to_string(), serde_json::to_value(self.scalar(name)).unwrap_or_default());
        }
        let mut names: Vec<&str> = self.0.iter().map(|r| r.name.as_str()).collect();
        names.dedup();
        for name in names {
            if out.contains_key(name) {
                continue;
            }
            let merged = Resources(self.0.iter().filter(|r| r.name == name).cloned().collect());
            let v = match &merged.0[0].value {
                Value::Scalar(_) => serde_json::to_value(merged.scalar(name)).unwrap_or_default(),
                Value::Ranges(_) => serde_json::Value::String(merged.ranges(name).to_string()),
                Value::Set(_) => {
                    let mut all = BTreeSet::new();
                    for r in &merged.0 {
                        if let Value::Set(s) = &r.value {
                            all.extend(s.iter().cloned());
                        }
                    }
                    serde_json::Value::String(Value::Set(all).to_string())
                }
            };
            out.insert(name.to_string(), v);
        }
        out
    }

    /// Parses Mesos's resource syntax: `cpus:2;mem:1024;disk:4096;ports:[31000-32000]`, with optional roles
    /// (`cpus(ads):8`) and sets (`zones:{a,b}`). Every malformed item is reported, not just the first.
    pub fn parse(text: &str) -> Result<Resources, Vec<ParseError>> {
        let mut out = Resources::new();
        let mut errors = Vec::new();
        for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            match parse_item(item) {
                Ok(r) => out.add_one(r),
                Err(reason) => errors.push(ParseError::Item { item: item.to_string(), reason }),
            }
        }
        if errors.is_empty() { Ok(out) } else { Err(errors) }
    }
}

fn parse_item(item: &str) -> Result<Resource, String> {
    let (key, value) = item.split_once(':').ok_or("expected 'name:value'")?;
    let key = key.trim();
    let value = value.trim();
    let (name, role) = match key.split_once('(') {
        Some((name, rest)) => {
            let role = rest.strip_suffix(')').ok_or("unclosed '(' in role")?;
            (name.trim(), role.trim())
        }
        None => (key, UNRESERVED),
    };
    if name.is_empty() {
        return Err("empty resource name".into());
    }
    if role.is_empty() {
        return Err("empty role".into());
    }
    let value = parse_value(value)?;
    if let Value::Scalar(v) = value
        && v < Fixed::ZERO
    {
        return Err("negative value".into());
    }
    Ok(Resource { name: name.to_string(), role: role.to_string(), value })
}

/// Parses one value in Mesos syntax: a number, `[b-e, b-e]` ranges, or a `{a,b}` set.
pub fn parse_value(value: &str) -> Result<Value, String> {
    if let Some(inner) = value.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("unclosed '[' in ranges")?;
        let mut ranges = Vec::new();
        for part in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (b, e) = part.split_once('-').unwrap_or((part, part));
            let b: u64 = b.trim().parse().map_err(|_| format!("'{part}' is not a range like 31000-32000"))?;
            let e: u64 = e.trim().parse().map_err(|_| format!("'{part}' is not a range like 31000-32000"))?;
            if b > e {
                return Err(format!("range '{part}' ends before it begins"));
            }
            ranges.push((b, e));
        }
        return Ok(Value::Ranges(Ranges::new(ranges)));
    }
    if let Some(inner) = value.strip_prefix('{') {
        let inner = inner.strip_suffix('}').ok_or("unclosed '{' in set")?;
        let items: BTreeSet<String> =
            inner.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        return Ok(Value::Set(items));
    }
    let v: f64 = value.parse().map_err(|_| format!("'{value}' is not a number, [ranges] or {{set}}"))?;
    if !v.is_finite() {
        return Err(format!("'{value}' is not a finite number"));
    }
    Ok(Value::Scalar(Fixed::from_f64(v)))
}

impl FromStr for Resources {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Resources::parse(s).map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    }
}

impl fmt::Display for Resources {
    /// Mesos's syntax, e.g. `cpus:2;mem:1024;ports:[31000-32000];cpus(ads):8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            if r.is_unreserved() {
                write!(f, "{}:{}", r.name, r.value)?;
            } else {
                write!(f, "{}({}):{}", r.name, r.role, r.value)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fixed_point_has_no_fragments() {
        let sum = Fixed::from_f64(0.1) + Fixed::from_f64(0.2);
        assert_eq!(sum, Fixed::from_f64(0.3));
        assert_eq!(sum.to_string(), "0.3");
        let mut left = Fixed::from_f64(1.0);
        for _ in 0..10 {
            left -= Fixed::from_f64(0.1);
        }
        assert!(left.is_zero());
    }

    #[test]
    fn parses_mesos_syntax() {
        let r: Resources = "cpus:2;mem:1024;disk:4096;ports:[31000-32000]".parse().unwrap();
        assert_eq!(r.scalar("cpus"), Fixed::from_int(2));
        assert_eq!(r.scalar("mem"), Fixed::from_int(1024));
        assert_eq!(r.ranges("ports"), Ranges::new([(31000, 32000)]));
        assert_eq!(r.to_string(), "cpus:2;disk:4096;mem:1024;ports:[31000-32000]");
    }

    #[test]
    fn parses_roles_and_sets() {
        let r = Resources::parse("cpus(ads):8;cpus:1;zones:{a,b}").unwrap();
        assert_eq!(r.scalar("cpus"), Fixed::from_int(9));
        assert_eq!(r.allocatable_to("web").scalar("cpus"), Fixed::from_int(1));
        assert_eq!(r.allocatable_to("ads").scalar("cpus"), Fixed::from_int(9));
    }

    #[test]
    fn reports_every_bad_item() {
        let errs = Resources::parse("cpus:two;mem:1024;ports:[5-1];disk").unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].contains("'cpus:two'"));
        assert!(text[1].contains("'ports:[5-1]'"));
        assert!(text[2].contains("'disk'"));
    }

    #[test]
    fn ranges_arithmetic() {
        let mut r = Ranges::new([(31000, 32000)]);
        r.subtract(&Ranges::new([(31000, 31000), (31500, 31600)]));
        assert_eq!(r, Ranges::new([(31001, 31499), (31601, 32000)]));
        assert!(r.contains(&Ranges::single(31001)));
        assert!(!r.contains(&Ranges::single(31000)));
        r.add(&Ranges::new([(31000, 31000), (31500, 31600)]));
        assert_eq!(r, Ranges::new([(31000, 32000)]));
    }

    #[test]
    fn flat_json_has_mesos_shape() {
        let r: Resources = "cpus:2;mem:1024;disk:4096;ports:[31000-32000]".parse().unwrap();
        let j = serde_json::Value::Object(r.flat_json());
        assert_eq!(j, serde_json::json!({"cpus":2,"gpus":0,"mem":1024,"disk":4096,"ports":"[31000-32000]"}));
    }

    /// Resources over a few names and roles, scalars and ranges, for containment in both directions.
    fn arb_mixed() -> impl Strategy<Value = Resources> {
        let item = (0usize..3, 0usize..3, 0u32..3000, 31000u64..31010, 0u64..4).prop_map(|(n, r, v, b, l)| {
            let role = ["*", "a", "b"][r];
            match n {
                0 => Resource::scalar("cpus", f64::from(v) / 1000.0).reserved(role),
                1 => Resource::scalar("mem", v.into()).reserved(role),
                _ => Resource::ranges("ports", [(b, b + l)]).reserved(role),
            }
        });
        proptest::collection::vec(item, 0..5).prop_map(Resources::from_vec)
    }

    fn arb_resources() -> impl Strategy<Value = Resources> {
        (0u32..4000, 0u32..100_000, proptest::collection::vec((31000u64..31100, 0u64..5), 0..4)).prop_map(
            |(cpus, mem, ports)| {
                Resources::from_vec([
                    Resource {
                        name: "cpus".into(),
                        role: "*".into(),
                        value: Value::Scalar(Fixed::from_milli(cpus.into())),
                    },
                    Resource {
                        name: "mem".into(),
                        role: "*".into(),
                        value: Value::Scalar(Fixed::from_milli(mem.into())),
                    },
                    Resource::ranges("ports", ports.into_iter().map(|(b, l)| (b, b + l))),
                ])
            },
        )
    }

    proptest! {
        #[test]
        fn add_then_subtract_is_identity(a in arb_resources(), b in arb_resources()) {
            let mut sum = a.clone();
            sum.add(&b);
            prop_assert!(sum.contains(&a));
            prop_assert!(sum.contains(&b));
            // Ranges may overlap, so only scalars are exactly recoverable.
            let back = sum.checked_sub(&b).unwrap();
            prop_assert_eq!(back.scalar("cpus"), a.scalar("cpus"));
            prop_assert_eq!(back.scalar("mem"), a.scalar("mem"));
        }

        #[test]
        fn contains_is_containment_item_by_item(a in arb_mixed(), b in arb_mixed()) {
            let by_item = |outer: &Resources, inner: &Resources| {
                inner.iter().all(|o| outer.iter().any(|r| r.key() == o.key() && r.value.contains(&o.value)))
            };
            prop_assert_eq!(a.contains(&b), by_item(&a, &b));
            prop_assert_eq!(b.contains(&a), by_item(&b, &a));
            let mut sum = a.clone();
            sum.add(&b);
            prop_assert!(sum.contains(&a) && sum.contains(&b) && sum.contains(&Resources::new()));
        }

        #[test]
        fn display_round_trips(a in arb_resources()) {
            let text = a.to_string();
            let parsed: Resources = text.parse().unwrap();
            prop_assert_eq!(parsed, a);
        }
    }
}
