//! Events about clusters (`events.k8s.io/v1`). An Event repeated within a few minutes
//! (same type, reason, note, object and related object) is counted in the first one's
//! series rather than written again, as kubelets and controllers do; an Event with another
//! note is always an Event of its own. (kube-runtime's `Recorder` folds by reason alone and
//! keeps the first note: "Updated ConfigMap/a" counted twice where the second update was
//! of a StatefulSet.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
pub use kube::runtime::events::EventType;

/// How long a written Event takes the repeats of itself.
const FOLD_WINDOW: Duration = Duration::from_secs(6 * 60);
/// `events.k8s.io/v1` refuses notes longer than 1 KiB.
const NOTE_MAX: usize = 1024;

/// What makes two Events the same Event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    regarding: (Option<String>, Option<String>, Option<String>),
    related: Option<(Option<String>, Option<String>, Option<String>)>,
    warning: bool,
    reason: String,
    note: String,
}

fn identity(r: &ObjectReference) -> (Option<String>, Option<String>, Option<String>) {
    (r.kind.clone(), r.namespace.clone(), r.name.clone())
}

/// A written Event: its name, how often it happened, when last.
#[derive(Clone, Debug)]
struct Written {
    name: String,
    count: i32,
    last: Timestamp,
}

pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    written: Mutex<HashMap<Key, Written>>,
}

fn bounded(note: String) -> String {
    if note.len() <= NOTE_MAX {
        return note;
    }
    let mut end = NOTE_MAX - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &note[..end])
}

impl Events {
    pub fn new(client: Client, controller: &str, instance: String) -> Events {
        Events {
            client,
            controller: controller.into(),
            instance,
            written: Mutex::new(HashMap::new()),
        }
    }

    /// The Event to send now: a new one, or a repeat (with its series) of one written
    /// within the window. Forgets what is older than the window.
    fn plan(&self, key: &Key, now: Timestamp) -> Option<Written> {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let window = i64::try_from(FOLD_WINDOW.as_secs()).unwrap_or(i64::MAX);
        written.retain(|_, w| now.as_second() - w.last.as_second() < window);
        written.get(key).map(|w| Written {
            name: w.name.clone(),
            count: w.count + 1,
            last: now,
        })
    }

    fn remember(&self, key: Key, w: Written) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.insert(key, w);
    }

    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
        related: Option<ObjectReference>,
    ) -> Result<(), kube::Error> {
        let note = bounded(note);
        let key = Key {
            regarding: identity(regarding),
            related: related.as_ref().map(identity),
            warning: type_ == EventType::Warning,
            reason: reason.into(),
            note: note.clone(),
        };
        let now = Timestamp::now();
        let namespace = regarding.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Some(repeat) = self.plan(&key, now) {
            let patch = serde_json::json!({ "series": EventSeries {
                count: repeat.count,
                last_observed_time: MicroTime(now),
            }});
            match api
                .patch(&repeat.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.remember(key, repeat);
                    return Ok(());
                }
                // Deleted meanwhile (Events expire): write it anew.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Reconcile".into()),
            reason: Some(reason.into()),
            note: Some(note),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            regarding: Some(regarding.clone()),
            related,
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        self.remember(
            key,
            Written {
                name,
                count: 1,
                last: now,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str, note: &str) -> Key {
        Key {
            regarding: (
                Some("PostgresCluster".into()),
                Some("db".into()),
                Some("pg".into()),
            ),
            related: None,
            warning: false,
            reason: reason.into(),
            note: note.into(),
        }
    }

    #[tokio::test]
    async fn repeats_fold_and_other_notes_never_do() {
        // A client that is never called: `plan` and `remember` only keep the book.
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let events = Events::new(Client::try_from(config).unwrap(), "pgpilot", "i".into());
        let t0 = Timestamp::from_second(1_000).unwrap();
        let a = key("Updated", "Updated ConfigMap/a");
        assert!(events.plan(&a, t0).is_none());
        events.remember(
            a.clone(),
            Written {
                name: "pg.1".into(),
                count: 1,
                last: t0,
            },
        );
        let t1 = Timestamp::from_second(1_060).unwrap();
        let repeat = events.plan(&a, t1).expect("a repeat within the window");
        assert_eq!((repeat.name.as_str(), repeat.count), ("pg.1", 2));
        // Same reason, another note: its own Event.
        assert!(
            events
                .plan(&key("Updated", "Updated StatefulSet/pg"), t1)
                .is_none()
        );
        // Past the window, even the same Event is written anew.
        let later = Timestamp::from_second(1_000 + 6 * 60).unwrap();
        assert!(events.plan(&a, later).is_none());
    }

    #[test]
    fn notes_are_cut_to_what_the_api_accepts() {
        let long = "é".repeat(1000);
        let cut = bounded(long);
        assert!(cut.len() <= NOTE_MAX && cut.ends_with('…'), "{}", cut.len());
        assert_eq!(bounded("short".into()), "short");
    }
}
