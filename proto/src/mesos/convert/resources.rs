//! Resources and attributes, Mesos's `Resource` (a name, a `Value.Type` and the matching value, a role or a
//! reservation stack, an allocation role) and `Attribute`.

use super::super::v1;
use crate::convert::{attributes_from_wire, resources_from_wire};
use crate::model;
use crate::{ConvertError, wire};

/// `r` as Mesos's resources; `allocation_role` (an offer's or a task's role) sets `allocation_info` on each.
pub fn resources_to_v1(r: &model::Resources, allocation_role: Option<&str>) -> Vec<v1::Resource> {
    r.iter().map(|r| resource_to_v1(r, allocation_role)).collect()
}

fn resource_to_v1(r: &model::Resource, allocation_role: Option<&str>) -> v1::Resource {
    use v1::value::Type as T;
    let (kind, scalar, ranges, set) = match &r.value {
        model::Value::Scalar(v) => (T::Scalar, Some(v1::value::Scalar { value: v.as_f64() }), None, None),
        model::Value::Ranges(rs) => (T::Ranges, None, Some(ranges_to_v1(rs)), None),
        model::Value::Set(s) => (T::Set, None, None, Some(v1::value::Set { item: s.iter().cloned().collect() })),
    };
    // Reserved resources carry the reservation stack (Mesos's post-refinement format) and, for clients of the older
    // format, the role; Agora's reservations are static (`--resources cpus(role):N`).
    let reservations = if r.is_unreserved() {
        vec![]
    } else {
        vec![v1::resource::ReservationInfo {
            r#type: Some(v1::resource::reservation_info::Type::Static as i32),
            role: Some(r.role.clone()),
            ..Default::default()
        }]
    };
    v1::Resource {
        name: r.name.clone(),
        r#type: kind as i32,
        scalar,
        ranges,
        set,
        role: Some(r.role.clone()),
        reservations,
        allocation_info: allocation_role.map(|role| v1::resource::AllocationInfo { role: Some(role.to_string()) }),
        ..Default::default()
    }
}

fn ranges_to_v1(r: &model::Ranges) -> v1::value::Ranges {
    v1::value::Ranges { range: r.iter().map(|(begin, end)| v1::value::Range { begin, end }).collect() }
}

fn ranges_v1_to_wire(r: v1::value::Ranges) -> wire::Ranges {
    wire::Ranges { range: r.range.into_iter().map(|x| wire::Range { begin: x.begin, end: x.end }).collect() }
}

/// The role a Mesos resource is reserved for: the innermost of its reservation stack, else the legacy
/// `reservation`'s role or `role`; `*` when unreserved.
fn reserved_role(r: &v1::Resource) -> String {
    r.reservations
        .last()
        .and_then(|x| x.role.clone())
        .or_else(|| r.reservation.as_ref().and_then(|x| x.role.clone()))
        .or_else(|| r.role.clone())
        .unwrap_or_else(|| model::UNRESERVED.to_string())
}

pub(crate) fn resource_v1_to_wire(r: v1::Resource) -> Result<wire::Resource, ConvertError> {
    use v1::value::Type as T;
    use wire::resource::Value as W;
    let role = reserved_role(&r);
    let value = match T::try_from(r.r#type) {
        Ok(T::Scalar) => r.scalar.map(|s| W::Scalar(wire::Scalar { value: s.value })),
        Ok(T::Ranges) => r.ranges.map(|x| W::Ranges(ranges_v1_to_wire(x))),
        Ok(T::Set) => r.set.map(|s| W::Set(wire::Set { item: s.item })),
        _ => return Err(ConvertError::new(r.name, format!("resources cannot be of type {}", r.r#type))),
    };
    let Some(value) = value else {
        return Err(ConvertError::new(r.name, "the value of the resource's type is missing"));
    };
    Ok(wire::Resource { name: r.name, value: Some(value), role })
}

/// Mesos's resources as the model's; fails naming the resource (`resources[2]`).
pub fn resources_from_v1(items: Vec<v1::Resource>) -> Result<model::Resources, ConvertError> {
    resources_from_wire(resources_v1_to_wire(items)?)
}

pub(crate) fn resources_v1_to_wire(items: Vec<v1::Resource>) -> Result<Vec<wire::Resource>, ConvertError> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, r)| resource_v1_to_wire(r).map_err(|e| e.within(&format!("resources[{i}]"))))
        .collect()
}

pub fn attributes_to_v1(a: &model::Attributes) -> Vec<v1::Attribute> {
    use v1::value::Type as T;
    a.iter()
        .map(|a| {
            let mut out = v1::Attribute { name: a.name.clone(), ..Default::default() };
            match &a.value {
                model::AttrValue::Scalar(v) => {
                    out.r#type = T::Scalar as i32;
                    out.scalar = Some(v1::value::Scalar { value: v.as_f64() });
                }
                model::AttrValue::Ranges(r) => {
                    out.r#type = T::Ranges as i32;
                    out.ranges = Some(ranges_to_v1(r));
                }
                model::AttrValue::Set(s) => {
                    out.r#type = T::Set as i32;
                    out.set = Some(v1::value::Set { item: s.iter().cloned().collect() });
                }
                model::AttrValue::Text(t) => {
                    out.r#type = T::Text as i32;
                    out.text = Some(v1::value::Text { value: t.clone() });
                }
            }
            out
        })
        .collect()
}

pub fn attributes_from_v1(items: Vec<v1::Attribute>) -> Result<model::Attributes, ConvertError> {
    attributes_from_wire(attributes_v1_to_wire(items))
}

pub(crate) fn attributes_v1_to_wire(items: Vec<v1::Attribute>) -> Vec<wire::Attribute> {
    use v1::value::Type as T;
    use wire::attribute::Value as W;
    items
        .into_iter()
        .map(|a| {
            let value = match T::try_from(a.r#type) {
                Ok(T::Scalar) => a.scalar.map(|s| W::Scalar(wire::Scalar { value: s.value })),
                Ok(T::Ranges) => a.ranges.map(|r| W::Ranges(ranges_v1_to_wire(r))),
                Ok(T::Set) => a.set.map(|s| W::Set(wire::Set { item: s.item })),
                Ok(T::Text) => a.text.map(|t| W::Text(wire::Text { value: t.value })),
                Err(_) => None,
            };
            // A value missing for its type is reported by the model conversion ("attribute has no value").
            wire::Attribute { name: a.name, value }
        })
        .collect()
}
