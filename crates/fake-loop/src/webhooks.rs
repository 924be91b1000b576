//! The fake sends webhooks too: every new version of a subscription or an order (from
//! `/_control/mutate`, a scheduled or recurring mutation, or the Rust API) becomes a
//! signed delivery to the configured URL, as Loop would send it: a JSON body
//! `{"payload": ..., "metaData": {"myshopifyDomain": ...}}`, the `X-Loop-Webhook-*`
//! headers and `X-Loop-Signature`, an HMAC-SHA256 of the raw body (hex or base64).
//!
//! What goes wrong with real webhooks is planted on purpose: a [`DeliveryPlan`] drops,
//! duplicates, delays or reorders deliveries by count (deterministic, no randomness),
//! and each mutation may override it ([`Delivery`]): no webhook at all, a dropped one,
//! a duplicate, or one held back until [`Outbox::release`] sends the held ones in
//! reverse order. [`WebhookOnly`] sends a webhook for a version the API then does not
//! show, or for an entity the API does not have. Failed posts are retried like Loop
//! does (a few times here, with a short backoff), with `X-Loop-Webhook-Retry-Count`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;

/// The shop every delivery names in `metaData`.
pub const SHOP_DOMAIN: &str = "fake-shop.myshopify.com";
/// Loop's API version header of every delivery.
const API_VERSION: &str = "2023-10";
/// Attempts per delivery (the first one and retries) before it counts as failed.
const MAX_ATTEMPTS: u32 = 5;
/// Wait before the first retry; doubles each time.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// Per-request timeout (Loop gives a receiver 5 s).
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// How `X-Loop-Signature` encodes the HMAC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    #[default]
    Hex,
    Base64,
}

/// Faults applied to every delivery by its number (1, 2, 3, ... since start). 0 = never.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryPlan {
    /// Every n-th delivery is lost (never posted).
    pub drop_every: u64,
    /// Every n-th delivery is posted twice (same webhook id).
    pub duplicate_every: u64,
    /// Every delivery waits this long before its post.
    pub delay_ms: u64,
    /// Deliveries are sent in batches of this many, each batch in reverse order
    /// (0 or 1 = in order). A partial batch waits for [`Outbox::release`].
    pub reorder_batch: usize,
}

/// Where and how the fake sends webhooks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTarget {
    /// e.g. `http://127.0.0.1:8080/webhooks/loop`
    pub url: String,
    pub secret: String,
    #[serde(default)]
    pub encoding: SignatureEncoding,
    #[serde(default)]
    pub plan: DeliveryPlan,
}

/// What happens to the webhooks of one mutation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// As the [`DeliveryPlan`] says.
    #[default]
    Plan,
    /// The record changes without any webhook.
    None,
    /// The webhook is made, then lost (counted as dropped).
    Drop,
    /// Posted twice, with the same webhook id.
    Duplicate,
    /// Held back until [`Outbox::release`], which sends the held ones newest first.
    Hold,
}

/// A webhook without the matching change in the API's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum WebhookOnly {
    /// A new version of an existing record (updatedAt = now) that the API never shows.
    NewerThanApi { stream: String, id: i64 },
    /// A record with an id the API does not have.
    UnknownEntity { stream: String, id: i64 },
}

/// What the outbox did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookStats {
    /// Webhooks made (one per new subscription or order version, duplicates not counted).
    pub made: u64,
    /// Posts answered 2xx (each copy of a duplicate counts).
    pub delivered: u64,
    /// Lost on purpose (plan or [`Delivery::Drop`]).
    pub dropped: u64,
    /// Extra copies posted.
    pub duplicated: u64,
    /// Changes made with [`Delivery::None`].
    pub silent: u64,
    /// Given up after [`MAX_ATTEMPTS`].
    pub failed: u64,
    /// Waiting to be posted or being posted (not counting held ones).
    pub pending: u64,
    /// Held back (by [`Delivery::Hold`] or a partial reorder batch).
    pub held: u64,
}

/// One webhook as Loop would send it.
#[derive(Clone, Debug)]
struct Outgoing {
    id: String,
    topic: String,
    created_at: String,
    body: Vec<u8>,
    copies: u32,
    delay: Duration,
}

#[derive(Default)]
struct Queue {
    stats: WebhookStats,
    held: Vec<Outgoing>,
    batch: Vec<Outgoing>,
}

/// Makes webhooks for new versions and hands them to the sender task.
pub(crate) struct Outbox {
    target: WebhookTarget,
    /// The fake's clock: webhook created-at and delivery-at times.
    clock: loop_time::Clock,
    queue: Mutex<Queue>,
    tx: mpsc::UnboundedSender<Outgoing>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Outgoing>>>,
}

/// The topic Loop sends for a new version of a record of `stream`; None for streams
/// Loop sends no webhooks for.
pub(crate) fn topic(stream: &str, created: bool) -> Option<&'static str> {
    Some(match (stream, created) {
        ("subscriptions", true) => "subscription/created",
        ("subscriptions", false) => "subscription/updated",
        ("orders", true) => "order/upcoming",
        ("orders", false) => "order/processed",
        _ => return None,
    })
}

/// The signature header of `body` under `secret`.
pub fn sign(secret: &str, encoding: SignatureEncoding, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    match encoding {
        SignatureEncoding::Hex => hex::encode(tag),
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(tag),
    }
}

impl Outbox {
    pub(crate) fn new(target: WebhookTarget, clock: loop_time::Clock) -> Outbox {
        let (tx, rx) = mpsc::unbounded_channel();
        Outbox {
            target,
            clock,
            queue: Mutex::new(Queue::default()),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stats(&self) -> WebhookStats {
        self.queue().stats.clone()
    }

    /// Webhooks for the new `versions` of records of `stream`.
    pub(crate) fn versions(&self, stream: &str, created: bool, versions: &[Value], how: Delivery) {
        let Some(topic) = topic(stream, created) else {
            return;
        };
        for v in versions {
            self.send(topic, v, how);
        }
    }

    /// One webhook for `payload` under `topic`, as `how` and the plan say.
    pub(crate) fn send(&self, topic: &str, payload: &Value, how: Delivery) {
        let mut q = self.queue();
        if how == Delivery::None {
            q.stats.silent += 1;
            return;
        }
        q.stats.made += 1;
        let n = q.stats.made;
        let plan = &self.target.plan;
        let every = |k: u64| k > 0 && n.is_multiple_of(k);
        if how == Delivery::Drop || every(plan.drop_every) {
            q.stats.dropped += 1;
            return;
        }
        let now = loop_time::format_instant(self.clock.now());
        let body = json!({"payload": payload, "metaData": {"myshopifyDomain": SHOP_DOMAIN}});
        let out = Outgoing {
            id: format!("fake-wh-{n}"),
            topic: topic.to_string(),
            created_at: now,
            body: body.to_string().into_bytes(),
            copies: if how == Delivery::Duplicate || every(plan.duplicate_every) {
                2
            } else {
                1
            },
            delay: Duration::from_millis(plan.delay_ms),
        };
        if how == Delivery::Hold {
            q.stats.held += 1;
            q.held.push(out);
            return;
        }
        if plan.reorder_batch > 1 {
            q.stats.held += 1;
            q.batch.push(out);
            if q.batch.len() >= plan.reorder_batch {
                let batch = std::mem::take(&mut q.batch);
                self.post_reversed(&mut q, batch);
            }
            return;
        }
        self.post(&mut q, out);
    }

    /// Sends every held delivery (held ones and a partial reorder batch), newest first.
    pub(crate) fn release(&self) {
        let mut q = self.queue();
        let mut all = std::mem::take(&mut q.held);
        all.append(&mut q.batch);
        self.post_reversed(&mut q, all);
    }

    fn post_reversed(&self, q: &mut Queue, outs: Vec<Outgoing>) {
        q.stats.held -= outs.len() as u64;
        for out in outs.into_iter().rev() {
            self.post(q, out);
        }
    }

    fn post(&self, q: &mut Queue, out: Outgoing) {
        q.stats.pending += 1;
        if out.copies > 1 {
            q.stats.duplicated += u64::from(out.copies - 1);
        }
        let _ = self.tx.send(out);
    }

    /// Posts queued deliveries until the server shuts down (one task per delivery, so a
    /// delay or a slow receiver does not hold back the next one).
    pub(crate) async fn run(self: Arc<Self>) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let client = match reqwest::Client::builder().timeout(POST_TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("fake-loop: cannot build the webhook client, no webhooks sent: {e}");
                return;
            }
        };
        while let Some(out) = rx.recv().await {
            let me = Arc::clone(&self);
            let client = client.clone();
            tokio::spawn(async move {
                tokio::time::sleep(out.delay).await;
                let mut delivered = 0;
                for _ in 0..out.copies {
                    if me.post_once(&client, &out).await {
                        delivered += 1;
                    }
                }
                let mut q = me.queue();
                q.stats.pending -= 1;
                q.stats.delivered += delivered;
                q.stats.failed += u64::from(out.copies) - delivered;
            });
        }
    }

    /// One delivery with retries; true once the receiver answered 2xx.
    async fn post_once(&self, client: &reqwest::Client, out: &Outgoing) -> bool {
        let signature = sign(&self.target.secret, self.target.encoding, &out.body);
        let mut backoff = RETRY_BACKOFF;
        for attempt in 0..MAX_ATTEMPTS {
            let sent = client
                .post(&self.target.url)
                .header("content-type", "application/json")
                .header("x-loop-webhook-id", &out.id)
                .header("x-loop-webhook-topic", &out.topic)
                .header("x-loop-webhook-api-version", API_VERSION)
                .header("x-loop-webhook-created-at", &out.created_at)
                .header(
                    "x-loop-webhook-delivery-at",
                    loop_time::format_instant(self.clock.now()),
                )
                .header("x-loop-webhook-retry-count", attempt.to_string())
                .header("x-loop-signature", &signature)
                .body(out.body.clone())
                .send()
                .await;
            if sent.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_an_independent_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let body = b"what do ya want for nothing?";
        assert_eq!(
            sign("Jefe", SignatureEncoding::Hex, body),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            sign("Jefe", SignatureEncoding::Base64, body),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
    }

    /// The fake keeps its own topics (one shared with the product could not catch a wrong
    /// one); this holds the two lists together.
    #[test]
    fn every_topic_sent_is_a_documented_topic_of_its_streams_entity() {
        for &stream in crate::seed::STREAMS {
            let entity = loop_entities::by_stream(stream);
            for created in [true, false] {
                match (topic(stream, created), entity) {
                    (Some(topic), Some(entity)) => {
                        assert!(entity.topics.contains(&topic), "{topic} is not documented");
                        assert_eq!(loop_entities::of_topic(topic), Some(entity), "{topic}");
                    }
                    (None, None) => {}
                    (topic, entity) => {
                        panic!("{stream}: the fake sends {topic:?}, Loop's entity is {entity:?}")
                    }
                }
            }
        }
        for entity in loop_entities::ENTITIES {
            assert!(
                crate::seed::STREAMS.contains(&entity.stream),
                "{}: the fake serves no stream {}",
                entity.kind,
                entity.stream
            );
        }
    }

    fn outbox(plan: DeliveryPlan) -> Outbox {
        Outbox::new(
            WebhookTarget {
                url: "http://127.0.0.1:9/x".into(),
                secret: "s".into(),
                encoding: SignatureEncoding::Hex,
                plan,
            },
            loop_time::Clock::new(),
        )
    }

    #[test]
    fn the_plan_drops_duplicates_and_reorders_by_count() {
        let o = outbox(DeliveryPlan {
            drop_every: 3,
            duplicate_every: 2,
            reorder_batch: 2,
            ..DeliveryPlan::default()
        });
        let v: Vec<Value> = (1..=6).map(|i| json!({"id": i})).collect();
        o.versions("subscriptions", false, &v, Delivery::Plan);
        o.versions("customers", false, &v, Delivery::Plan);
        let s = o.stats();
        assert_eq!((s.made, s.dropped, s.pending, s.held), (6, 2, 4, 0));
        // 2 and 4 are duplicated (6 is dropped)
        assert_eq!(s.duplicated, 2);
        let mut rx = o.rx.lock().unwrap().take().unwrap();
        let ids: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|o| o.id)
            .collect();
        assert_eq!(ids, ["fake-wh-2", "fake-wh-1", "fake-wh-5", "fake-wh-4"]);
    }

    #[test]
    fn held_deliveries_go_out_newest_first_on_release() {
        let o = outbox(DeliveryPlan::default());
        for i in 1..=3 {
            o.send("order/processed", &json!({"id": i}), Delivery::Hold);
        }
        o.send("order/processed", &json!({"id": 4}), Delivery::None);
        assert_eq!((o.stats().held, o.stats().silent), (3, 1));
        o.release();
        let mut rx = o.rx.lock().unwrap().take().unwrap();
        let ids: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|o| o.id)
            .collect();
        assert_eq!(ids, ["fake-wh-3", "fake-wh-2", "fake-wh-1"]);
        assert_eq!((o.stats().held, o.stats().pending), (0, 3));
    }
}
