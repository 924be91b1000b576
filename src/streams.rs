//! The stream table: every stream is one entry of data, not a copy of code.

/// How a stream is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read by time windows on `cursor`, using the endpoint's epoch filters.
    Incremental {
        start_param: &'static str,
        end_param: &'static str,
    },
    /// No filter known: every sync pages through everything.
    FullRefresh,
    /// The webhook journal, incremental on its sequence number.
    Journal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDef {
    pub name: &'static str,
    /// Endpoint path under the API base, without the leading slash; also the rate-limit key.
    pub endpoint: &'static str,
    /// Extra query parameters every request sends.
    pub fixed_params: &'static [(&'static str, &'static str)],
    pub primary_key: &'static str,
    /// Field holding the record's version instant (None for full refresh).
    pub cursor: Option<&'static str>,
    pub mode: Mode,
    /// Webhook entity kind whose newer versions fold into this stream.
    pub webhook_kind: Option<&'static str>,
    pub schema: &'static str,
}

impl StreamDef {
    pub fn is_incremental(&self) -> bool {
        !matches!(self.mode, Mode::FullRefresh)
    }
}

pub const STREAMS: &[StreamDef] = &[
    StreamDef {
        name: "subscriptions",
        endpoint: "subscription",
        fixed_params: &[],
        primary_key: "id",
        cursor: Some("updatedAt"),
        mode: Mode::Incremental {
            start_param: "updatedAtStartEpoch",
            end_param: "updatedAtEndEpoch",
        },
        webhook_kind: Some("subscription"),
        schema: include_str!("../schemas/subscriptions.json"),
    },
    StreamDef {
        name: "orders",
        endpoint: "order",
        fixed_params: &[],
        primary_key: "id",
        cursor: Some("updatedAt"),
        mode: Mode::Incremental {
            start_param: "updatedAtStartEpoch",
            end_param: "updatedAtEndEpoch",
        },
        webhook_kind: Some("order"),
        schema: include_str!("../schemas/orders.json"),
    },
    StreamDef {
        name: "customers",
        endpoint: "customer",
        fixed_params: &[],
        primary_key: "id",
        cursor: None,
        mode: Mode::FullRefresh,
        webhook_kind: None,
        schema: include_str!("../schemas/customers.json"),
    },
    StreamDef {
        name: "products",
        endpoint: "product",
        fixed_params: &[("type", "ALL")],
        primary_key: "shopifyId",
        cursor: None,
        mode: Mode::FullRefresh,
        webhook_kind: None,
        schema: include_str!("../schemas/products.json"),
    },
    StreamDef {
        name: "activity_logs",
        endpoint: "activityLog",
        fixed_params: &[],
        primary_key: "id",
        cursor: Some("createdAt"),
        mode: Mode::Incremental {
            start_param: "createdAtStartEpoch",
            end_param: "createdAtEndEpoch",
        },
        webhook_kind: None,
        schema: include_str!("../schemas/activity_logs.json"),
    },
    StreamDef {
        name: "webhook_events",
        endpoint: "",
        fixed_params: &[],
        primary_key: "id",
        cursor: Some("seq"),
        mode: Mode::Journal,
        webhook_kind: None,
        schema: include_str!("../schemas/webhook_events.json"),
    },
];

pub fn find(name: &str) -> Option<&'static StreamDef> {
    STREAMS.iter().find(|s| s.name == name)
}
