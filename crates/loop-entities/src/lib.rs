//! The entity table: every kind of entity Loop sends webhooks about, the stream its
//! records are read as, and the topics Loop documents for it, written down once. The
//! connector (which stream a webhook folds into, what `reconcile` compares) and the
//! receiver (which entity a delivery carries, which topics are known, the reconcile
//! metrics' `stream` label) both read it. The fake Loop API keeps its own list of the
//! topics it sends on purpose, and a test of the fake compares that list with this table.
//!
//! A kind is also its topics' prefix (`subscription/updated`), its repairs' prefix
//! (`subscription/repaired_from_api`) and the journal's `entity_kind`.

/// One kind of entity Loop sends webhooks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entity {
    /// The kind, as the journal stores it and as the part of its topics before `/`.
    pub kind: &'static str,
    /// The stream whose records a webhook about this kind carries newer versions of.
    pub stream: &'static str,
    /// The topics Loop documents for this kind (each is `<kind>/<event>`).
    pub topics: &'static [&'static str],
}

/// Every entity kind Loop sends webhooks about, in the order reports and metrics list them.
pub const ENTITIES: &[Entity] = &[
    Entity {
        kind: "subscription",
        stream: "subscriptions",
        topics: &[
            "subscription/created",
            "subscription/paused",
            "subscription/updated",
            "subscription/cancelled",
            "subscription/resumed",
            "subscription/reactivated",
            "subscription/delayed",
            "subscription/rescheduled",
            "subscription/expired",
            "subscription/inventoryAction",
        ],
    },
    Entity {
        kind: "order",
        stream: "orders",
        topics: &[
            "order/upcoming",
            "order/processed",
            "order/partiallyProcessed",
            "order/outOfStock",
            "order/skipped",
            "order/unskipped",
            "order/paymentFailed",
        ],
    },
];

/// Topics Loop documents whose payload is no entity the connector reads as a stream
/// (payment methods, flows, checkouts): known, journaled, but folded nowhere.
pub const OTHER_TOPICS: &[&str] = &[
    "paymentMethod/updateRequested",
    "paymentMethod/updated",
    "paymentMethod/expiringSoon",
    "flow/completed",
    "subscriptionCheckout/success",
    "subscriptionCheckout/failed",
];

/// The entity of `kind` (`subscription`, `order`).
pub fn by_kind(kind: &str) -> Option<&'static Entity> {
    ENTITIES.iter().find(|e| e.kind == kind)
}

/// The entity whose records `stream` holds.
pub fn by_stream(stream: &str) -> Option<&'static Entity> {
    ENTITIES.iter().find(|e| e.stream == stream)
}

/// The entity a delivery under `topic` is about, by the topic's prefix: a topic Loop
/// adds later (`subscription/<new event>`) still carries a subscription's new version.
pub fn of_topic(topic: &str) -> Option<&'static Entity> {
    let (prefix, _) = topic.split_once('/')?;
    by_kind(prefix)
}

/// Every topic Loop documents: the entities' and [`OTHER_TOPICS`].
pub fn known_topics() -> impl Iterator<Item = &'static str> {
    ENTITIES
        .iter()
        .flat_map(|e| e.topics.iter())
        .chain(OTHER_TOPICS)
        .copied()
}

/// Whether Loop documents `topic` (others are still journaled, and counted apart).
pub fn is_known_topic(topic: &str) -> bool {
    known_topics().any(|t| t == topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_topic_names_its_entity_by_prefix() {
        for e in ENTITIES {
            assert!(!e.topics.is_empty(), "{}: no topics", e.kind);
            for topic in e.topics {
                assert_eq!(of_topic(topic), Some(e), "{topic}");
            }
        }
        for topic in OTHER_TOPICS {
            assert_eq!(of_topic(topic), None, "{topic} names no entity");
        }
    }

    #[test]
    fn kinds_streams_and_topics_are_each_listed_once() {
        let mut kinds: Vec<_> = ENTITIES.iter().map(|e| e.kind).collect();
        let mut streams: Vec<_> = ENTITIES.iter().map(|e| e.stream).collect();
        let mut topics: Vec<_> = known_topics().collect();
        for list in [&mut kinds, &mut streams, &mut topics] {
            let n = list.len();
            list.sort_unstable();
            list.dedup();
            assert_eq!(list.len(), n, "a duplicate in {list:?}");
        }
    }

    #[test]
    fn lookups_find_each_entity_by_kind_stream_and_topic() {
        let order = by_kind("order").unwrap();
        assert_eq!(order.stream, "orders");
        assert_eq!(by_stream("subscriptions").unwrap().kind, "subscription");
        assert_eq!(by_stream("customers"), None);
        // a topic Loop has not documented (yet) still names its entity
        assert_eq!(of_topic("order/someNewEvent"), Some(order));
        assert_eq!(of_topic("subscriptionCheckout/success"), None);
        assert_eq!(of_topic("subscription"), None, "no `/`: no entity");
        assert!(is_known_topic("flow/completed"));
        assert!(is_known_topic("subscription/updated"));
        assert!(!is_known_topic("order/someNewEvent"));
        assert!(!is_known_topic("subscription/repaired_from_api"));
    }
}
