//! Between Kubernetes' protobuf messages and their JSON form, by the
//! descriptors: the JSON the Go types would marshal, so that a protobuf
//! body becomes the object a JSON body of the same object would be.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value as Pb,
};
use serde_json::{Map, Value};

use super::ProtobufError;
use super::schema::{Form, Schema};

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// The JSON form of `msg`, or `None` for what JSON leaves out (a zero
/// `metav1.Time`, an empty `RawExtension`). Fields the schema does not know
/// are kept as `"#<number>": true`, so that field validation reports them
/// (`unknown field "spec.#99"`) and the typed decoding then drops them.
pub fn message_to_json(
    s: &Schema,
    msg: &DynamicMessage,
    path: &str,
) -> Result<Option<Value>, ProtobufError> {
    let num = |n: u32| msg.get_field_by_number(n);
    let int = |n: u32| num(n).and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)));
    Ok(match s.form(&msg.descriptor()) {
        Form::Time | Form::MicroTime => {
            let (secs, nanos) = (int(1).unwrap_or(0), int(2).unwrap_or(0));
            if (secs, nanos) == (0, 0) {
                // Go writes a zero time as an empty message.
                return Ok(None);
            }
            let bad = || ProtobufError::invalid(path, "time out of range");
            let t = jiff::Timestamp::new(secs, i32::try_from(nanos).map_err(|_| bad())?)
                .map_err(|_| bad())?;
            Some(
                match s.form(&msg.descriptor()) {
                    Form::Time => jiff::Timestamp::from_second(secs)
                        .map_err(|_| bad())?
                        .to_string(),
                    _ => micro_time(t),
                }
                .into(),
            )
        }
        Form::Duration => Some(go_duration(int(1).unwrap_or(0)).into()),
        Form::Quantity => Some(string_field(msg, 1).into()),
        Form::IntOrString => Some(match int(1).unwrap_or(0) {
            1 => string_field(msg, 3).into(),
            _ => int(2).unwrap_or(0).into(),
        }),
        Form::RawJson => {
            let raw = num(1)
                .and_then(|v| v.as_bytes().cloned())
                .unwrap_or_default();
            if raw.is_empty() {
                return Ok(None);
            }
            Some(serde_json::from_slice(&raw).map_err(|e| {
                ProtobufError::invalid(path, &format!("raw JSON does not parse: {e}"))
            })?)
        }
        Form::Items => Some(list_field(s, msg, 1, path)?.into()),
        Form::SchemaOrArray | Form::SchemaOrStringArray => {
            let list = list_field(s, msg, 2, path)?;
            if list.is_empty() {
                message_field(s, msg, 1, path)?
            } else {
                Some(list.into())
            }
        }
        Form::SchemaOrBool => match message_field(s, msg, 2, path)? {
            Some(schema) => Some(schema),
            None => Some(num(1).and_then(|v| v.as_bool()).unwrap_or(false).into()),
        },
        Form::Object => Some(object_to_json(s, msg, path)?),
    })
}

fn object_to_json(s: &Schema, msg: &DynamicMessage, path: &str) -> Result<Value, ProtobufError> {
    let mut out = Map::new();
    for field in msg.descriptor().fields() {
        if !msg.has_field(&field) {
            continue;
        }
        let name = s.json_name(&field);
        let fpath = join(path, name);
        let value = msg.get_field(&field);
        let json = match &*value {
            Pb::List(items) => {
                let mut list = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let ipath = format!("{fpath}[{i}]");
                    list.push(value_to_json(s, item, &ipath)?.unwrap_or(Value::Null));
                }
                Value::Array(list)
            }
            Pb::Map(entries) => {
                let mut map = Map::new();
                for (key, v) in entries {
                    let key = match key {
                        MapKey::String(k) => k.clone(),
                        other => format!("{other:?}"),
                    };
                    let vpath = format!("{fpath}[{key}]");
                    map.insert(key, value_to_json(s, v, &vpath)?.unwrap_or(Value::Null));
                }
                Value::Object(map)
            }
            Pb::Message(m) if s.is_inline(&field) => {
                if let Value::Object(fields) = object_to_json(s, m, path)? {
                    out.extend(fields);
                }
                continue;
            }
            Pb::Message(_) => match value_to_json(s, &value, &fpath)? {
                Some(v) => v,
                None => continue,
            },
            scalar => {
                if s.omits_zero(&field) && scalar.is_default(&field.kind()) {
                    continue;
                }
                match value_to_json(s, scalar, &fpath)? {
                    Some(v) => v,
                    None => continue,
                }
            }
        };
        out.insert(name.to_owned(), json);
    }
    for unknown in msg.unknown_fields() {
        out.insert(format!("#{}", unknown.number()), Value::Bool(true));
    }
    Ok(Value::Object(out))
}

fn value_to_json(s: &Schema, v: &Pb, path: &str) -> Result<Option<Value>, ProtobufError> {
    Ok(Some(match v {
        Pb::Bool(b) => (*b).into(),
        Pb::I32(n) => (*n).into(),
        Pb::I64(n) => (*n).into(),
        Pb::U32(n) => (*n).into(),
        Pb::U64(n) => (*n).into(),
        Pb::F32(n) => {
            serde_json::Number::from_f64(f64::from(*n)).map_or(Value::Null, Value::Number)
        }
        Pb::F64(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Pb::String(t) => t.clone().into(),
        Pb::Bytes(b) => BASE64.encode(b).into(),
        Pb::EnumNumber(n) => (*n).into(),
        Pb::Message(m) => return message_to_json(s, m, path),
        Pb::List(_) | Pb::Map(_) => {
            return Err(ProtobufError::invalid(path, "a list or map inside a list"));
        }
    }))
}

fn string_field(msg: &DynamicMessage, number: u32) -> String {
    msg.get_field_by_number(number)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn list_field(
    s: &Schema,
    msg: &DynamicMessage,
    number: u32,
    path: &str,
) -> Result<Vec<Value>, ProtobufError> {
    let Some(v) = msg.get_field_by_number(number) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in v.as_list().unwrap_or_default() {
        out.push(value_to_json(s, item, path)?.unwrap_or(Value::Null));
    }
    Ok(out)
}

fn message_field(
    s: &Schema,
    msg: &DynamicMessage,
    number: u32,
    path: &str,
) -> Result<Option<Value>, ProtobufError> {
    if !msg.has_field_by_number(number) {
        return Ok(None);
    }
    match msg.get_field_by_number(number).as_deref() {
        Some(Pb::Message(m)) => message_to_json(s, m, path),
        _ => Ok(None),
    }
}

/// Go's `RFC3339Micro`: always six fractional digits.
fn micro_time(t: jiff::Timestamp) -> String {
    let secs = jiff::Timestamp::from_second(t.as_second()).unwrap_or(t);
    let text = secs.to_string();
    let stem = text.strip_suffix('Z').unwrap_or(&text);
    format!("{stem}.{:06}Z", t.subsec_microsecond())
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `2m0s`, `1.5ms`, `0s`.
pub fn go_duration(nanos: i64) -> String {
    fn decimal(value: u64, unit: u64) -> String {
        let (whole, frac) = (value / unit, value % unit);
        if frac == 0 {
            return whole.to_string();
        }
        let width = unit.ilog10() as usize;
        let digits = format!("{frac:0width$}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
    const SECOND: u64 = 1_000_000_000;
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let body = match n {
        0 => return "0s".into(),
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{}µs", decimal(n, 1_000)),
        n if n < SECOND => format!("{}ms", decimal(n, 1_000_000)),
        n => {
            let (h, rest) = (n / (3600 * SECOND), n % (3600 * SECOND));
            let (m, rest) = (rest / (60 * SECOND), rest % (60 * SECOND));
            let mut out = String::new();
            if h > 0 {
                out += &format!("{h}h");
            }
            if h > 0 || m > 0 {
                out += &format!("{m}m");
            }
            out + &format!("{}s", decimal(rest, SECOND))
        }
    };
    format!("{sign}{body}")
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers with units
/// (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), optionally signed.
pub fn parse_go_duration(text: &str) -> Option<i64> {
    let (sign, mut rest) = match text.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let number: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Some((sign * total).round() as i64)
}

/// `value` (JSON) as a message of `desc`, for writing it in protobuf.
/// Keys the message has no field for (`apiVersion`, `kind`, fields of
/// newer releases) are left out, as Go's JSON decoding would.
pub fn json_to_message(
    s: &Schema,
    value: &Value,
    desc: &MessageDescriptor,
    path: &str,
) -> Result<DynamicMessage, ProtobufError> {
    let mut msg = DynamicMessage::new(desc.clone());
    let field = |n: u32| {
        desc.get_field(n)
            .ok_or_else(|| ProtobufError::invalid(path, "descriptor without its fields"))
    };
    let bad = |what: &str| ProtobufError::invalid(path, &format!("expected {what}"));
    match s.form(desc) {
        Form::Time | Form::MicroTime => {
            let text = value.as_str().ok_or_else(|| bad("an RFC 3339 time"))?;
            let t: jiff::Timestamp = text.parse().map_err(|_| bad("an RFC 3339 time"))?;
            msg.set_field(&field(1)?, Pb::I64(t.as_second()));
            if s.form(desc) == Form::MicroTime && t.subsec_nanosecond() != 0 {
                msg.set_field(&field(2)?, Pb::I32(t.subsec_microsecond() * 1000));
            }
        }
        Form::Duration => {
            let text = value.as_str().ok_or_else(|| bad("a duration"))?;
            let nanos = parse_go_duration(text).ok_or_else(|| bad("a duration"))?;
            msg.set_field(&field(1)?, Pb::I64(nanos));
        }
        Form::Quantity => {
            let text = match value {
                Value::String(t) => t.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(bad("a quantity")),
            };
            msg.set_field(&field(1)?, Pb::String(text));
        }
        Form::IntOrString => match value {
            Value::Number(n) => {
                let n = n.as_i64().and_then(|n| i32::try_from(n).ok());
                msg.set_field(&field(1)?, Pb::I64(0));
                msg.set_field(&field(2)?, Pb::I32(n.ok_or_else(|| bad("an int32"))?));
            }
            Value::String(t) => {
                msg.set_field(&field(1)?, Pb::I64(1));
                msg.set_field(&field(3)?, Pb::String(t.clone()));
            }
            _ => return Err(bad("an integer or a string")),
        },
        Form::RawJson => {
            let raw = serde_json::to_vec(value).unwrap_or_default();
            msg.set_field(&field(1)?, Pb::Bytes(raw.into()));
        }
        Form::Items => {
            let f = field(1)?;
            msg.set_field(&f, field_from_json(s, &f, value, path)?);
        }
        Form::SchemaOrArray | Form::SchemaOrStringArray => {
            let f = if value.is_array() {
                field(2)?
            } else {
                field(1)?
            };
            msg.set_field(&f, field_from_json(s, &f, value, path)?);
        }
        Form::SchemaOrBool => {
            let f = if value.is_boolean() {
                field(1)?
            } else {
                field(2)?
            };
            msg.set_field(&f, field_from_json(s, &f, value, path)?);
        }
        Form::Object => {
            let obj = value.as_object().ok_or_else(|| bad("an object"))?;
            for f in desc.fields() {
                if let (true, Kind::Message(inner)) = (s.is_inline(&f), f.kind()) {
                    let embedded = json_to_message(s, value, &inner, path)?;
                    msg.set_field(&f, Pb::Message(embedded));
                    continue;
                }
                match obj.get(s.json_name(&f)) {
                    None | Some(Value::Null) => {}
                    Some(v) => {
                        let fpath = join(path, s.json_name(&f));
                        msg.set_field(&f, field_from_json(s, &f, v, &fpath)?);
                    }
                }
            }
        }
    }
    Ok(msg)
}

fn field_from_json(
    s: &Schema,
    field: &FieldDescriptor,
    value: &Value,
    path: &str,
) -> Result<Pb, ProtobufError> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Err(ProtobufError::invalid(path, "map without an entry type"));
        };
        let value_kind = entry.map_entry_value_field().kind();
        let obj = value
            .as_object()
            .ok_or_else(|| ProtobufError::invalid(path, "expected an object"))?;
        let mut map = std::collections::HashMap::new();
        for (k, v) in obj {
            let vpath = format!("{path}[{k}]");
            map.insert(
                MapKey::String(k.clone()),
                scalar_from_json(s, &value_kind, v, &vpath)?,
            );
        }
        return Ok(Pb::Map(map));
    }
    if field.is_list() {
        let items = value
            .as_array()
            .ok_or_else(|| ProtobufError::invalid(path, "expected a list"))?;
        let mut list = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            list.push(scalar_from_json(
                s,
                &field.kind(),
                item,
                &format!("{path}[{i}]"),
            )?);
        }
        return Ok(Pb::List(list));
    }
    scalar_from_json(s, &field.kind(), value, path)
}

fn scalar_from_json(
    s: &Schema,
    kind: &Kind,
    value: &Value,
    path: &str,
) -> Result<Pb, ProtobufError> {
    let bad = |what: &str| ProtobufError::invalid(path, &format!("expected {what}"));
    let int = || value.as_i64().ok_or_else(|| bad("an integer"));
    Ok(match kind {
        Kind::Message(m) => Pb::Message(json_to_message(s, value, m, path)?),
        Kind::String => Pb::String(value.as_str().ok_or_else(|| bad("a string"))?.to_owned()),
        Kind::Bytes => {
            let text = value.as_str().ok_or_else(|| bad("base64 bytes"))?;
            Pb::Bytes(BASE64.decode(text).map_err(|_| bad("base64 bytes"))?.into())
        }
        Kind::Bool => Pb::Bool(value.as_bool().ok_or_else(|| bad("a boolean"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Pb::I32(i32::try_from(int()?).map_err(|_| bad("an int32"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Pb::I64(int()?),
        Kind::Uint32 | Kind::Fixed32 => {
            Pb::U32(u32::try_from(int()?).map_err(|_| bad("a uint32"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => Pb::U64(value.as_u64().ok_or_else(|| bad("a uint64"))?),
        Kind::Double => Pb::F64(value.as_f64().ok_or_else(|| bad("a number"))?),
        Kind::Float => Pb::F32(value.as_f64().ok_or_else(|| bad("a number"))? as f32),
        Kind::Enum(_) => Pb::EnumNumber(i32::try_from(int()?).map_err(|_| bad("an enum"))?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_write_as_go_does() {
        for (nanos, text) in [
            (0, "0s"),
            (1_500, "1.5µs"),
            (1_500_000, "1.5ms"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_500_000_000, "1h2m3.5s"),
            (-2_000_000_000, "-2s"),
        ] {
            assert_eq!(go_duration(nanos), text);
            assert_eq!(parse_go_duration(text), Some(nanos), "{text}");
        }
        assert_eq!(parse_go_duration("5x"), None);
    }
}
