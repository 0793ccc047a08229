//! Readable and JSON lines of the door's events (the events, the
//! [`EventSink`] trait, [`Recorder`] and `DefmtSink` come from
//! [`fewshot_door::events`]).

use std::io::Write;

use serde_json::{json, Value};

pub use fewshot_door::events::*;

/// The event as one JSON object: `{"event": name, "t_ms": at_ms, ...fields}`.
pub fn to_json(event: &Event, at_ms: u64) -> Value {
    let mut v = match event {
        Event::Booted {
            identities,
            threshold,
            gallery_threshold,
            distance,
        } => {
            let mut v =
                json!({"identities": identities, "threshold": threshold, "distance": distance});
            if let Some((size, t)) = gallery_threshold {
                v["gallery_threshold"] = json!(t);
                v["gallery_threshold_size"] = json!(size);
            }
            v
        }
        Event::GalleryCorrupt { message, kept_at } => {
            json!({"message": message, "kept_at": kept_at})
        }
        Event::EnrollStarted { frames } => json!({ "frames": frames }),
        Event::Enrolled { id, name, shots } => json!({"id": id, "name": name, "shots": shots}),
        Event::EnrollRefused { spread, limit } => json!({"spread": spread, "limit": limit}),
        Event::Deleted { id, name } => json!({"id": id, "name": name}),
        Event::Erased { count } => json!({ "count": count }),
        Event::Opened {
            id,
            name,
            distance,
            bbox,
        } => with_box(json!({"id": id, "name": name, "distance": distance}), bbox),
        Event::Refused { distance, bbox } => with_box(json!({ "distance": distance }), bbox),
        Event::FaceTooSmall {
            bbox,
            eye_px,
            min_eye_px,
        } => json!({"box": bbox, "eye_px": eye_px, "min_eye_px": min_eye_px}),
        Event::CoolDown { rejections, for_ms } => {
            json!({"rejections": rejections, "for_ms": for_ms})
        }
        Event::Ignored { remaining_ms } => json!({ "remaining_ms": remaining_ms }),
        Event::NameSet { name, adds_to } => json!({"name": name, "adds_to": adds_to}),
        Event::ShotsAdded {
            id,
            name,
            shots,
            total,
        } => json!({"id": id, "name": name, "shots": shots, "total": total}),
        Event::AddRefused {
            id,
            name,
            distance,
            limit,
        } => json!({"id": id, "name": name, "distance": distance, "limit": limit}),
        Event::Roster { people, capacity } => {
            let people: Vec<Value> = people
                .iter()
                .map(|(id, name, shots)| json!({"id": id, "name": name, "shots": shots}))
                .collect();
            json!({"people": people, "capacity": capacity})
        }
        Event::NotEnrolled { name } => json!({ "name": name }),
        Event::Error { message } => json!({ "message": message }),
        Event::EnrollTimedOut | Event::NothingToDelete | Event::EraseArmed | Event::NoFace => {
            json!({})
        }
    };
    let fields = v.as_object_mut().map(std::mem::take).unwrap_or_default();
    let mut out = serde_json::Map::new();
    out.insert("event".into(), event.name().into());
    out.insert("t_ms".into(), at_ms.into());
    out.extend(fields);
    Value::Object(out)
}

/// Adds `"box": [x, y, w, h]` to an event's fields when there is a box.
fn with_box(mut v: Value, bbox: &Option<[f32; 4]>) -> Value {
    if let (Some(b), Some(map)) = (bbox, v.as_object_mut()) {
        map.insert("box".into(), json!(b));
    }
    v
}

/// Writes each event as one line: readable text or one JSON object.
/// Write errors (a closed pipe) are ignored: logging never stops the door.
#[derive(Debug)]
pub struct LineSink<W: Write> {
    out: W,
    json: bool,
}

impl<W: Write> LineSink<W> {
    /// Lines to `out`, JSON when `json`.
    pub fn new(out: W, json: bool) -> Self {
        LineSink { out, json }
    }
}

impl<W: Write> EventSink for LineSink<W> {
    fn emit(&mut self, at_ms: u64, event: &Event) {
        let _ = if self.json {
            writeln!(self.out, "{}", to_json(event, at_ms))
        } else {
            writeln!(
                self.out,
                "[{:>5}.{:03} s] {}",
                at_ms / 1000,
                at_ms % 1000,
                event.describe()
            )
        };
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_the_event_name_time_and_fields() {
        let mut out = Vec::new();
        let mut sink = LineSink::new(&mut out, true);
        sink.emit(
            1234,
            &Event::Opened {
                id: 3,
                name: "person-3".into(),
                distance: 0.5,
                bbox: None,
            },
        );
        sink.emit(
            1300,
            &Event::Refused {
                distance: None,
                bbox: Some([1.0, 2.0, 30.0, 40.0]),
            },
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            json!({"event": "opened", "t_ms": 1234, "id": 3, "name": "person-3", "distance": 0.5})
        );
        assert_eq!(
            lines[1],
            json!({"event": "refused", "t_ms": 1300, "distance": null, "box": [1.0, 2.0, 30.0, 40.0]})
        );
    }

    #[test]
    fn text_lines_are_readable() {
        let mut out = Vec::new();
        LineSink::new(&mut out, false).emit(
            61_005,
            &Event::Deleted {
                id: 2,
                name: "x".into(),
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[   61.005 s] deleted x (id 2)\n"
        );
    }
}
