//! Deterministic data generation and the in-memory store (records indexed by id and by
//! `updatedAt`). A record is kept as compact JSON text, except a generated subscription
//! that has not changed since: that is kept as the random choices it was drawn from and
//! rendered when served, which is what lets a million of them start in about a second
//! and half a gigabyte. A subscription becomes text on its first mutation.

use std::borrow::Cow;
use std::collections::BTreeSet;

use chrono::{DateTime, FixedOffset, Utc};
use loop_time::format_ms;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::distribution::Shape;
use crate::{FakeConfig, FilterBounds, Mutation, PageOrder};

pub(crate) const HOUR_MS: i64 = 3_600_000;
pub(crate) const DAY_MS: i64 = 24 * HOUR_MS;

/// Statuses a seeded record may filter on.
const SEED_TAGS: &[&str] = &[
    "ACTIVE",
    "PAUSED",
    "CANCELLED",
    "EXPIRED",
    "PAID",
    "FAILED",
    "SKIPPED",
    "UNPROCESSED",
];

/// The five list streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Stream {
    Subscriptions = 0,
    Orders = 1,
    Customers = 2,
    Products = 3,
    ActivityLogs = 4,
}

impl Stream {
    pub(crate) fn from_name(name: &str) -> Option<Stream> {
        Some(match name {
            "subscriptions" => Stream::Subscriptions,
            "orders" => Stream::Orders,
            "customers" => Stream::Customers,
            "products" => Stream::Products,
            "activity_logs" => Stream::ActivityLogs,
            _ => return None,
        })
    }

    /// Endpoint path (without version prefix), e.g. `/subscription`.
    pub(crate) fn from_path(path: &str) -> Option<Stream> {
        Some(match path {
            "/subscription" => Stream::Subscriptions,
            "/order" => Stream::Orders,
            "/customer" => Stream::Customers,
            "/product" => Stream::Products,
            "/activityLog" => Stream::ActivityLogs,
            _ => return None,
        })
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Stream::Subscriptions => "Subscriptions fetched successfully",
            Stream::Orders => "Orders fetched successfully",
            Stream::Customers => "Customers fetched successfully",
            Stream::Products => "Products fetched successfully",
            Stream::ActivityLogs => "Activity logs fetched successfully",
        }
    }
}

/// One stored record: its current version plus index keys.
pub(crate) struct Rec {
    /// `id`, or `shopifyId` for products.
    pub key: i64,
    pub created: i64,
    /// Instant of `updatedAt` in ms (internal for customers/products, = created for logs).
    pub updated: i64,
    /// Subscription status; for products "SP" when a variant has a selling plan.
    pub tag: &'static str,
    pub body: Body,
}

/// The current version of a record.
pub(crate) enum Body {
    /// Compact JSON text.
    Text(Box<str>),
    /// A subscription as generated and never changed since, rendered on request from
    /// its [`SubDraw`] (index into `Data::subs`). Keeping ~100 bytes of choices instead
    /// of ~2 KB of text is what lets a million subscriptions fit in memory.
    Subscription(u32),
}

impl Body {
    fn text(v: &Value) -> Body {
        Body::Text(v.to_string().into())
    }
}

#[derive(Default)]
pub(crate) struct Table {
    /// Sorted by key (new records always get a larger key, so appends keep it sorted).
    pub recs: Vec<Rec>,
    pub by_updated: BTreeSet<(i64, u32)>,
}

/// A list request after validation. Time bounds are inclusive ms ranges.
#[derive(Default, Debug)]
pub(crate) struct ListQuery {
    pub skip: usize,
    pub take: usize,
    pub updated: Option<(i64, i64)>,
    pub created: Option<(i64, i64)>,
    pub statuses: Option<Vec<String>>,
    pub selling_plan_only: bool,
}

impl ListQuery {
    fn matches(&self, r: &Rec) -> bool {
        if let Some((lo, hi)) = self.updated {
            if r.updated < lo || r.updated > hi {
                return false;
            }
        }
        if let Some((lo, hi)) = self.created {
            if r.created < lo || r.created > hi {
                return false;
            }
        }
        if let Some(st) = &self.statuses {
            if !st.iter().any(|s| s == r.tag) {
                return false;
            }
        }
        if self.selling_plan_only && r.tag != "SP" {
            return false;
        }
        true
    }
}

/// Converts epoch-second bounds to an inclusive millisecond range.
pub(crate) fn bounds_ms(
    start: Option<i64>,
    end: Option<i64>,
    b: FilterBounds,
) -> Option<(i64, i64)> {
    if start.is_none() && end.is_none() {
        return None;
    }
    Some(match b {
        FilterBounds::Inclusive => (
            start.map_or(i64::MIN, |s| s.saturating_mul(1000)),
            end.map_or(i64::MAX, |e| e.saturating_mul(1000).saturating_add(999)),
        ),
        FilterBounds::Exclusive => (
            start.map_or(i64::MIN, |s| s.saturating_mul(1000).saturating_add(1)),
            end.map_or(i64::MAX, |e| e.saturating_mul(1000).saturating_sub(1)),
        ),
    })
}

impl Table {
    fn push(&mut self, rec: Rec) {
        let idx = self.recs.len() as u32;
        self.by_updated.insert((rec.updated, idx));
        self.recs.push(rec);
    }

    fn set_updated(&mut self, idx: usize, updated: i64) {
        let old = self.recs[idx].updated;
        self.by_updated.remove(&(old, idx as u32));
        self.by_updated.insert((updated, idx as u32));
        self.recs[idx].updated = updated;
    }

    fn index_of(&self, key: i64) -> Option<usize> {
        self.recs.binary_search_by_key(&key, |r| r.key).ok()
    }

    fn next_key(&self, first: i64, step: i64) -> i64 {
        self.recs.last().map_or(first, |r| r.key + step)
    }

    /// One page: the records and whether more follow.
    pub(crate) fn page(&self, order: PageOrder, q: &ListQuery) -> (Vec<&Rec>, bool) {
        let unfiltered = q.updated.is_none()
            && q.created.is_none()
            && q.statuses.is_none()
            && !q.selling_plan_only;
        if unfiltered && order == PageOrder::Id {
            let start = q.skip.min(self.recs.len());
            let end = start.saturating_add(q.take).min(self.recs.len());
            let out = self.recs[start..end].iter().collect();
            return (out, end < self.recs.len());
        }
        let (lo, hi) = q.updated.unwrap_or((i64::MIN, i64::MAX));
        if lo > hi {
            return (Vec::new(), false);
        }
        let range = (lo, 0u32)..=(hi, u32::MAX);
        let iter: Box<dyn Iterator<Item = &Rec>> = match order {
            PageOrder::Id => Box::new(self.recs.iter()),
            PageOrder::UpdatedAsc => Box::new(
                self.by_updated
                    .range(range)
                    .map(|&(_, i)| &self.recs[i as usize]),
            ),
            PageOrder::UpdatedDesc => Box::new(
                self.by_updated
                    .range(range)
                    .rev()
                    .map(|&(_, i)| &self.recs[i as usize]),
            ),
        };
        let mut out = Vec::with_capacity(q.take.min(64));
        let mut has_next = false;
        for r in iter.filter(|r| q.matches(r)).skip(q.skip) {
            if out.len() == q.take {
                has_next = true;
                break;
            }
            out.push(r);
        }
        (out, has_next)
    }
}

// ---------------------------------------------------------------------------
// Formatting helpers

fn money(minor: i64, cur: &str) -> String {
    if cur == "JPY" {
        minor.to_string()
    } else {
        format!("{}.{:02}", minor / 100, minor % 100)
    }
}

fn parse_money(s: &str) -> i64 {
    match s.split_once('.') {
        Some((a, b)) => a.parse::<i64>().unwrap_or(0) * 100 + b.parse::<i64>().unwrap_or(0),
        None => s.parse::<i64>().unwrap_or(0),
    }
}

/// USD cents → minor units of `cur`.
fn from_usd(cents: i64, cur: &str) -> i64 {
    match cur {
        "EUR" => cents * 92 / 100,
        "GBP" => cents * 79 / 100,
        "CAD" => cents * 136 / 100,
        "JPY" => ((cents * 150 / 100) / 10 * 10).max(10),
        _ => cents,
    }
}

fn to_usd(minor: i64, cur: &str) -> i64 {
    match cur {
        "EUR" => minor * 100 / 92,
        "GBP" => minor * 100 / 79,
        "CAD" => minor * 100 / 136,
        "JPY" => minor * 100 / 150,
        _ => minor,
    }
}

// ---------------------------------------------------------------------------
// Vocabulary

const FIRST: &[(&str, &str)] = &[
    ("Zoë", "zoe"),
    ("José", "jose"),
    ("Emma", "emma"),
    ("Liam", "liam"),
    ("Olivia", "olivia"),
    ("Noah", "noah"),
    ("Sofía", "sofia"),
    ("Mateo", "mateo"),
    ("Anaïs", "anais"),
    ("Björn", "bjorn"),
    ("Chloé", "chloe"),
    ("Łukasz", "lukasz"),
    ("Amélie", "amelie"),
    ("Jürgen", "jurgen"),
    ("Søren", "soren"),
    ("Priya", "priya"),
    ("Oliver", "oliver"),
    ("Amara", "amara"),
    ("Kwame", "kwame"),
    ("Fatima", "fatima"),
    ("雷", "lei"),
    ("太郎", "taro"),
];
const LAST: &[(&str, &str)] = &[
    ("Ångström", "angstrom"),
    ("Müller", "muller"),
    ("Smith", "smith"),
    ("García", "garcia"),
    ("Nguyễn", "nguyen"),
    ("O'Brien", "obrien"),
    ("Dubois", "dubois"),
    ("Kowalski", "kowalski"),
    ("Rossi", "rossi"),
    ("Schröder", "schroder"),
    ("Lefèvre", "lefevre"),
    ("Jensen", "jensen"),
    ("Patel", "patel"),
    ("Okafor", "okafor"),
    ("李", "li"),
    ("山田", "yamada"),
];
const DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "mail.example.net",
    "exemple.fr",
];

struct City {
    city: &'static str,
    province: Option<(&'static str, &'static str)>,
    country: &'static str,
    code: &'static str,
    zip: &'static str,
    street: &'static str,
    currency: &'static str,
}
const CITIES: &[City] = &[
    City {
        city: "New York",
        province: Some(("New York", "NY")),
        country: "United States",
        code: "US",
        zip: "10001",
        street: "350 Fifth Avenue",
        currency: "USD",
    },
    City {
        city: "Austin",
        province: Some(("Texas", "TX")),
        country: "United States",
        code: "US",
        zip: "73301",
        street: "1100 Congress Ave",
        currency: "USD",
    },
    City {
        city: "Berlin",
        province: None,
        country: "Germany",
        code: "DE",
        zip: "10115",
        street: "Hauptstraße 5",
        currency: "EUR",
    },
    City {
        city: "Paris",
        province: None,
        country: "France",
        code: "FR",
        zip: "75001",
        street: "12 Rue de Rivoli",
        currency: "EUR",
    },
    City {
        city: "London",
        province: Some(("England", "ENG")),
        country: "United Kingdom",
        code: "GB",
        zip: "SW1A 1AA",
        street: "221B Baker Street",
        currency: "GBP",
    },
    City {
        city: "Toronto",
        province: Some(("Ontario", "ON")),
        country: "Canada",
        code: "CA",
        zip: "M5H 2N2",
        street: "100 Queen St W",
        currency: "CAD",
    },
    City {
        city: "Montréal",
        province: Some(("Québec", "QC")),
        country: "Canada",
        code: "CA",
        zip: "H2Y 1C6",
        street: "275 Rue Notre-Dame Est",
        currency: "CAD",
    },
    City {
        city: "東京",
        province: Some(("Tokyo", "JP-13")),
        country: "Japan",
        code: "JP",
        zip: "100-0001",
        street: "千代田1-1",
        currency: "JPY",
    },
    City {
        city: "Zürich",
        province: Some(("Zürich", "ZH")),
        country: "Switzerland",
        code: "CH",
        zip: "8001",
        street: "Bahnhofstrasse 1",
        currency: "EUR",
    },
    City {
        city: "Malmö",
        province: None,
        country: "Sweden",
        code: "SE",
        zip: "211 20",
        street: "Södergatan 3",
        currency: "EUR",
    },
];

const PRODUCTS: &[&str] = &[
    "Organic Coffee Beans",
    "Café Crème Blend",
    "Matcha Green Tea",
    "Whey Protein Powder",
    "Grain-Free Dog Treats",
    "Vitamin D3 Gummies",
    "Razor Blade Refills",
    "Shampoo Bar",
    "Oat Milk Barista",
    "Dark Chocolate 85%",
    "Bamboo Toothbrush",
    "Cold Brew Concentrate",
    "Kombucha Starter Kit",
    "Granola Mix — Maple & Pecan",
    "Face Serum",
    "Multivitamin",
    "Clumping Cat Litter",
    "Herbal Tea Sampler",
    "Single-Origin Espresso",
    "Plant Food",
];
const VARIANT_SETS: &[&[&str]] = &[
    &["250g / Whole Bean", "250g / Ground", "1kg / Whole Bean"],
    &["Small", "Medium", "Large"],
    &["Default Title"],
    &["Vanilla", "Chocolate", "Unflavoured"],
    &["Pack of 4", "Pack of 12"],
];
const LOG_KEYS: &[(&str, u32)] = &[
    ("subscription_created", 20),
    ("subscription_paused", 8),
    ("subscription_resumed", 6),
    ("subscription_cancelled", 8),
    ("payment_failed", 6),
    ("billing_policy_updated", 6),
    ("payment_method_updated", 6),
    ("next_billing_date_updated", 12),
    ("shipping_address_updated", 6),
    ("line_item_added", 5),
    ("line_item_removed", 3),
    ("order_skipped", 8),
    ("discount_applied", 4),
];
const PAYMENT_BRANDS: &[&str] = &[
    "visa",
    "mastercard",
    "american_express",
    "shop_pay",
    "paypal",
];
const LOG_SOURCES: &[&str] = &["Admin Portal", "Customer Portal", "System"];
const REASONS: &[&str] = &[
    "Too expensive",
    "I have too much product",
    "I'm moving",
    "Not happy with the product",
    "Other",
];

// ---------------------------------------------------------------------------
// Generation context

struct Variant {
    shopify_id: i64,
    title: &'static str,
    sku: String,
    price_cents: i64,
    has_sp: bool,
    image: Option<String>,
}
struct Product {
    shopify_id: i64,
    title: String,
    variants: Vec<Variant>,
}
struct Customer {
    id: i64,
    shopify_id: i64,
    first: usize,
    last: usize,
    email: String,
    phone: Option<String>,
    city: usize,
}
#[derive(Clone)]
struct Line {
    id: i64,
    product: usize,
    variant: usize,
    qty: i64,
    price: i64,
    base: i64,
    discounted: i64,
}
struct SubInfo {
    id: i64,
    created: i64,
    customer: Option<usize>,
    currency: &'static str,
    lines: Vec<Line>,
    delivery: i64,
}

/// How a timestamp is written. Every form is valid ISO 8601; only `WholeSeconds`
/// moves the instant (to the start of its second).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TsForm {
    /// `2023-01-05T01:43:34.000Z`, as Loop writes them.
    Canonical,
    /// `...34.000+00:00`
    UtcOffset,
    /// The same instant at `+02:00`.
    PlusTwoHours,
    /// `...34Z`
    WholeSeconds,
    /// `...34.000000Z`
    Micros,
}

/// A timestamp: the instant it denotes (ms) and how it is written.
#[derive(Clone, Copy, Debug)]
struct Stamp {
    ms: i64,
    form: TsForm,
}

impl Stamp {
    fn text(self) -> String {
        let dt = DateTime::<Utc>::from_timestamp_millis(self.ms).unwrap_or_default();
        match self.form {
            TsForm::Canonical => format_ms(self.ms),
            TsForm::UtcOffset => dt.format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string(),
            TsForm::PlusTwoHours => {
                let off = FixedOffset::east_opt(7200).expect("offset");
                dt.with_timezone(&off)
                    .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
                    .to_string()
            }
            TsForm::WholeSeconds => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            TsForm::Micros => dt.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        }
    }
}

/// An address as drawn: the names (and phone) of the customer or drawn names, the
/// city, an optional second line and company.
#[derive(Clone, Copy)]
struct AddressDraw {
    customer_names: bool,
    first: u8,
    last: u8,
    city: u8,
    apt: Option<u8>,
    company: bool,
}

#[derive(Clone, Copy)]
struct PaymentDraw {
    brand: &'static str,
    last_digits: u16,
    expiry_month: u8,
    expiry_year: u16,
}

#[derive(Clone, Copy)]
enum Attributes {
    None,
    GiftMessage,
    Source,
}

/// Everything random about one generated subscription's JSON beyond its [`SubInfo`];
/// [`Data::subscription_value`] renders it.
struct SubDraw {
    created: Stamp,
    updated: Stamp,
    status: &'static str,
    last_payment: Option<&'static str>,
    completed: i64,
    next_billing: i64,
    reason: Option<&'static str>,
    comment: bool,
    interval: &'static str,
    interval_count: u8,
    prepaid: bool,
    /// Set when billing is anchored to a day of the month.
    anchor_day: Option<u8>,
    marked: bool,
    /// 0 none, 1 local delivery, 2 pick-up, otherwise shipping.
    delivery_method: u8,
    payment: Option<PaymentDraw>,
    attributes: Attributes,
    max_cycles: Option<u8>,
    min_cycles: Option<u8>,
    shipping: Option<AddressDraw>,
    billing: Option<AddressDraw>,
}

fn subscription_shopify_id(id: i64) -> i64 {
    8_000_000_000 + id * 7
}

pub(crate) struct Data {
    pub tables: Vec<Table>,
    rng: StdRng,
    messy: bool,
    products: Vec<Product>,
    customers: Vec<Customer>,
    subs: Vec<SubInfo>,
    /// Parallel to `subs`.
    sub_draws: Vec<SubDraw>,
    next_line_id: i64,
    next_order_number: i64,
    mutation_counter: u64,
}

fn weighted<'a, R: Rng>(rng: &mut R, items: &[(&'a str, u32)]) -> &'a str {
    let total: u32 = items.iter().map(|x| x.1).sum();
    let mut x = rng.random_range(0..total);
    for (v, w) in items {
        if x < *w {
            return v;
        }
        x -= w;
    }
    items[0].0
}

impl Data {
    pub(crate) fn table(&self, s: Stream) -> &Table {
        &self.tables[s as usize]
    }

    /// Timestamp text (maybe in a "messy" but valid form) and the instant it denotes.
    fn ts(&mut self, ms: i64, floor: i64) -> (String, i64) {
        let st = self.stamp(ms, floor);
        (st.text(), st.ms)
    }

    /// The form a timestamp at `ms` is written in: with `messy`, ~1 in 20 in another
    /// valid form. Whole seconds (which moves the instant) only when that stays at or
    /// after `floor`.
    fn stamp(&mut self, ms: i64, floor: i64) -> Stamp {
        let form = |form| Stamp { ms, form };
        if !self.messy || !self.rng.random_ratio(1, 20) {
            return form(TsForm::Canonical);
        }
        match self.rng.random_range(0..4) {
            0 => form(TsForm::UtcOffset),
            1 => form(TsForm::PlusTwoHours),
            2 => {
                let t = ms - ms.rem_euclid(1000);
                if t >= floor {
                    Stamp {
                        ms: t,
                        form: TsForm::WholeSeconds,
                    }
                } else {
                    form(TsForm::Canonical)
                }
            }
            _ => form(TsForm::Micros),
        }
    }

    fn draw_address(&mut self, c: Option<usize>) -> AddressDraw {
        let (customer_names, first, last) = match c.map(|i| &self.customers[i]) {
            Some(c) if self.rng.random_bool(0.85) => (true, c.first, c.last),
            _ => (
                false,
                self.rng.random_range(0..FIRST.len()),
                self.rng.random_range(0..LAST.len()),
            ),
        };
        let city = match c {
            Some(i) => self.customers[i].city,
            None => self.rng.random_range(0..CITIES.len()),
        };
        let apt = if self.rng.random_bool(0.2) {
            let n: i32 = self.rng.random_range(1..60);
            Some(n as u8)
        } else {
            None
        };
        AddressDraw {
            customer_names,
            first: first as u8,
            last: last as u8,
            city: city as u8,
            apt,
            company: self.rng.random_bool(0.1),
        }
    }

    fn address_value(&self, a: &AddressDraw, c: Option<usize>) -> Value {
        let phone = match c {
            Some(i) if a.customer_names => self.customers[i].phone.clone(),
            _ => None,
        };
        let ct = &CITIES[a.city as usize];
        json!({
            "firstName": FIRST[a.first as usize].0,
            "lastName": LAST[a.last as usize].0,
            "address1": ct.street,
            "address2": a.apt.map(|n| format!("Apt {n}")),
            "city": ct.city,
            "province": ct.province.map(|p| p.0),
            "provinceCode": ct.province.map(|p| p.1),
            "country": ct.country,
            "countryCode": ct.code,
            "zip": ct.zip,
            "phone": phone,
            "company": if a.company { Value::from("Ångström & Söhne GmbH") } else { Value::Null },
        })
    }

    fn new_lines(&mut self, currency: &'static str, discounted: bool) -> Vec<Line> {
        let n = *[1usize, 1, 1, 2, 2, 3]
            .choose(&mut self.rng)
            .expect("nonempty");
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let p = self.rng.random_range(0..self.products.len());
            let v = self.rng.random_range(0..self.products[p].variants.len());
            let base = from_usd(self.products[p].variants[v].price_cents, currency);
            let price = if discounted { base * 90 / 100 } else { base };
            let disc = if discounted && self.rng.random_bool(0.3) {
                price * 85 / 100
            } else {
                price
            };
            self.next_line_id += 1;
            out.push(Line {
                id: self.next_line_id,
                product: p,
                variant: v,
                qty: *[1i64, 1, 1, 2, 3].choose(&mut self.rng).expect("nonempty"),
                price,
                base,
                discounted: disc,
            });
        }
        out
    }

    fn lines_json(&self, lines: &[Line], currency: &str, with_plan: bool) -> Value {
        Value::Array(
            lines
                .iter()
                .map(|l| {
                    let p = &self.products[l.product];
                    let v = &p.variants[l.variant];
                    let mut o = json!({
                        "id": l.id,
                        "productShopifyId": p.shopify_id,
                        "variantShopifyId": v.shopify_id,
                    });
                    let m = o.as_object_mut().expect("object");
                    if with_plan {
                        m.insert(
                            "sellingPlanShopifyId".into(),
                            json!(690_000_000_000i64 + v.shopify_id % 1_000_000),
                        );
                        m.insert(
                            "sellingPlanName".into(),
                            json!("Deliver every month, 10% off"),
                        );
                    }
                    m.insert("productTitle".into(), json!(p.title));
                    m.insert("variantTitle".into(), json!(v.title));
                    m.insert("price".into(), json!(money(l.price, currency)));
                    m.insert("basePrice".into(), json!(money(l.base, currency)));
                    m.insert(
                        "discountedPrice".into(),
                        json!(money(l.discounted, currency)),
                    );
                    m.insert("quantity".into(), json!(l.qty));
                    m.insert(
                        "sku".into(),
                        if v.sku.is_empty() {
                            Value::Null
                        } else {
                            json!(v.sku)
                        },
                    );
                    o
                })
                .collect(),
        )
    }

    /// Draws everything random about subscription `si`'s JSON (in the order the
    /// generator always has, so a seed keeps giving the same data).
    #[allow(clippy::too_many_arguments)]
    fn draw_subscription(
        &mut self,
        si: usize,
        created: Stamp,
        updated: Stamp,
        status: &'static str,
        completed: i64,
        last_payment: Option<&'static str>,
        data_end: i64,
    ) -> SubDraw {
        let customer = self.subs[si].customer;
        let r = &mut self.rng;
        let cancelled = status == "CANCELLED";
        let reason = cancelled.then(|| *REASONS.choose(r).expect("nonempty"));
        let comment = cancelled && r.random_bool(0.3);
        let interval = weighted(r, &[("MONTH", 70), ("WEEK", 20), ("DAY", 3), ("YEAR", 7)]);
        let interval_count: i64 = if interval == "WEEK" {
            *[1, 2, 4].choose(r).expect("x")
        } else {
            *[1, 1, 2, 3].choose(r).expect("x")
        };
        let prepaid = r.random_bool(0.1) && interval_count > 1;
        let anchored = interval == "MONTH" && r.random_bool(0.3);
        let next_billing = updated.ms.max(data_end) / 1000 + r.random_range(3600..30 * 86400);
        let marked = status == "ACTIVE" && r.random_bool(0.03);
        let delivery_method: i32 = r.random_range(0..10);
        let payment = if r.random_bool(0.05) {
            None
        } else {
            let brand = *PAYMENT_BRANDS.choose(r).expect("x");
            let last_digits: i32 = r.random_range(0..10000);
            let expiry_month: i32 = r.random_range(1..13);
            let expiry_year: i32 = r.random_range(2025..2031);
            Some(PaymentDraw {
                brand,
                last_digits: last_digits as u16,
                expiry_month: expiry_month as u8,
                expiry_year: expiry_year as u16,
            })
        };
        let attributes = if r.random_bool(0.2) {
            Attributes::GiftMessage
        } else if r.random_bool(0.1) {
            Attributes::Source
        } else {
            Attributes::None
        };
        let max_cycles = r.random_bool(0.15).then(|| r.random_range(3..13i32) as u8);
        let min_cycles = r.random_bool(0.2).then(|| r.random_range(1..4i32) as u8);
        let anchor_day: i32 = r.random_range(1..29);
        let ship_null = r.random_bool(0.05);
        let bill_null = r.random_bool(0.3);
        let shipping = (!ship_null).then(|| self.draw_address(customer));
        let billing = (!bill_null).then(|| self.draw_address(customer));
        SubDraw {
            created,
            updated,
            status,
            last_payment,
            completed,
            next_billing,
            reason,
            comment,
            interval,
            interval_count: interval_count as u8,
            prepaid,
            anchor_day: anchored.then_some(anchor_day as u8),
            marked,
            delivery_method: delivery_method as u8,
            payment,
            attributes,
            max_cycles,
            min_cycles,
            shipping,
            billing,
        }
    }

    /// The JSON of subscription `si` as drawn (see [`Body::Subscription`]).
    fn subscription_value(&self, si: usize) -> Value {
        let s = &self.subs[si];
        let d = &self.sub_draws[si];
        let (id, currency, customer, lines, delivery) =
            (s.id, s.currency, s.customer, &s.lines, s.delivery);
        let created = d.created.text();
        let updated = d.updated.text();
        let (paused_at, cancelled_at) = match d.status {
            "PAUSED" => (Some(updated.clone()), None),
            "CANCELLED" => (None, Some(updated.clone())),
            _ => (None, None),
        };
        let comment = d.comment.then_some("Will come back later 🙂 — merci!");
        let interval = d.interval;
        let count = i64::from(d.interval_count);
        let delivery_method = match d.delivery_method {
            0 => Value::Null,
            1 => {
                json!({"type": "LOCAL", "title": "Local delivery", "code": "local", "price": "0.00"})
            }
            2 => {
                json!({"type": "PICK_UP", "title": "Pick up in store", "code": "pickup", "price": "0.00"})
            }
            _ => {
                json!({"type": "SHIPPING", "title": "Standard Shipping", "code": "standard", "price": money(delivery, currency)})
            }
        };
        let payment = match &d.payment {
            None => Value::Null,
            Some(p) => json!({
                "id": id * 3 + 11,
                "shopifyId": 21_000_000_000i64 + id * 17,
                "type": if p.brand == "paypal" { "PAYPAL_BILLING_AGREEMENT" } else if p.brand == "shop_pay" { "SHOP_PAY_INSTALLMENTS" } else { "CUSTOMER_CREDIT_CARD" },
                "brand": p.brand,
                "lastDigits": format!("{:04}", p.last_digits),
                "expiryMonth": p.expiry_month,
                "expiryYear": p.expiry_year,
            }),
        };
        let has_discount = lines.iter().any(|l| l.discounted < l.price);
        let attributes = match d.attributes {
            Attributes::GiftMessage => {
                json!([{"key": "gift_message", "value": "Joyeux anniversaire ! 🎂"}])
            }
            Attributes::Source => {
                json!([{"key": "source", "value": "tiktok"}, {"key": "référence", "value": "A-ß-17"}])
            }
            Attributes::None => json!([]),
        };
        let ship = match &d.shipping {
            Some(a) => self.address_value(a, customer),
            None => Value::Null,
        };
        let bill = match &d.billing {
            Some(a) => self.address_value(a, customer),
            None => Value::Null,
        };
        let cust = match customer.map(|c| &self.customers[c]) {
            Some(c) => json!({"id": c.id, "shopifyId": c.shopify_id, "email": c.email}),
            None => Value::Null,
        };
        let total: i64 = lines.iter().map(|l| l.price * l.qty).sum();
        let total_disc: i64 = lines.iter().map(|l| l.discounted * l.qty).sum();
        let lines_v = self.lines_json(lines, currency, true);
        let completed = d.completed;
        json!({
            "id": id,
            "shopifyId": subscription_shopify_id(id),
            "originOrderShopifyId": 5_000_000_000_000i64 + id * 31,
            "createdAt": created,
            "updatedAt": updated,
            "status": d.status,
            "pausedAt": paused_at,
            "cancelledAt": cancelled_at,
            "cancellationReason": d.reason,
            "cancellationComment": comment,
            "isMarkedForCancellation": d.marked,
            "completedOrdersCount": completed,
            "nextBillingDateEpoch": d.next_billing,
            "lastPaymentStatus": d.last_payment,
            "currencyCode": currency,
            "totalLineItemPrice": money(total, currency),
            "totalLineItemDiscountedPrice": money(total_disc, currency),
            "deliveryPrice": money(delivery, currency),
            "isPrepaid": d.prepaid,
            "billingPolicy": {
                "interval": interval,
                "intervalCount": count,
                "minCycles": d.min_cycles,
                "maxCycles": d.max_cycles,
                "anchorType": if d.anchor_day.is_some() { Value::from("MONTHDAY") } else { Value::Null },
                "anchorDay": d.anchor_day,
                "anchorMonth": Value::Null,
            },
            "deliveryPolicy": {"interval": interval, "intervalCount": if d.prepaid { 1 } else { count }},
            "deliveryMethod": delivery_method,
            "shippingAddress": ship,
            "billingAddress": bill,
            "customer": cust,
            "paymentMethod": payment,
            "discounts": if has_discount { json!([{"id": id + 900_000, "title": "SUBSCRIBE10", "type": "PERCENTAGE", "value": "10.0", "usageCount": completed, "recurringCycleLimit": Value::Null}]) } else { json!([]) },
            "attributes": attributes,
            "lines": lines_v,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn order_json(
        &mut self,
        id: i64,
        si: usize,
        status: &'static str,
        created: &str,
        updated: &str,
        billing_epoch: i64,
        checkout: bool,
    ) -> Value {
        let s = &self.subs[si];
        let (sub_id, currency, customer, lines, delivery) =
            (s.id, s.currency, s.customer, s.lines.clone(), s.delivery);
        let paid = status == "PAID";
        let number = if paid {
            self.next_order_number += 1;
            Some(self.next_order_number)
        } else {
            None
        };
        let r = &mut self.rng;
        let financial = match status {
            "PAID" => Value::from(weighted(
                r,
                &[("PAID", 94), ("REFUNDED", 3), ("PARTIALLY_REFUNDED", 3)],
            )),
            "FAILED" => Value::from("PENDING"),
            _ => Value::Null,
        };
        let fulfillment = if paid {
            Value::from(weighted(
                r,
                &[
                    ("FULFILLED", 70),
                    ("UNFULFILLED", 20),
                    ("PARTIALLY_FULFILLED", 10),
                ],
            ))
        } else {
            Value::Null
        };
        let subtotal: i64 = lines.iter().map(|l| l.discounted * l.qty).sum();
        let discount: i64 = lines.iter().map(|l| (l.base - l.discounted) * l.qty).sum();
        let tax = if matches!(currency, "USD" | "CAD") {
            subtotal * 8 / 100
        } else {
            0
        };
        let total = subtotal + tax + delivery;
        let cust = match customer.map(|c| &self.customers[c]) {
            Some(c) => json!({"id": c.id, "shopifyId": c.shopify_id}),
            None => Value::Null,
        };
        let lines_v = self.lines_json(&lines, currency, false);
        json!({
            "id": id,
            "shopifyId": if paid { Value::from(5_100_000_000_000i64 + id * 13) } else { Value::Null },
            "shopifyOrderNumber": number,
            "subscriptionId": sub_id,
            "customer": cust,
            "status": status,
            "financialStatus": financial,
            "fulfillmentStatus": fulfillment,
            "orderType": if checkout { "CHECKOUT" } else { "RECURRING" },
            "billingDateEpoch": billing_epoch,
            "createdAt": created,
            "updatedAt": updated,
            "currencyCode": currency,
            "totalPrice": money(total, currency),
            "totalPriceUsd": money(to_usd(total, currency), "USD"),
            "totalTax": money(tax, currency),
            "totalDiscount": money(discount, currency),
            "totalShippingPrice": money(delivery, currency),
            "lines": lines_v,
        })
    }

    fn customer_json(c: &Customer, counts: [i64; 4]) -> Value {
        json!({
            "id": c.id,
            "shopifyId": c.shopify_id,
            "email": c.email,
            "firstName": FIRST[c.first].0,
            "lastName": LAST[c.last].0,
            "phone": c.phone,
            "activeSubscriptionsCount": counts[0],
            "pausedSubscriptionsCount": counts[1],
            "cancelledSubscriptionsCount": counts[2],
            "expiredSubscriptionsCount": counts[3],
            "allSubscriptionsCount": counts.iter().sum::<i64>(),
        })
    }

    fn product_json(p: &Product) -> Value {
        json!({
            "shopifyId": p.shopify_id,
            "title": p.title,
            "productVariants": p.variants.iter().map(|v| json!({
                "title": v.title,
                "shopifyId": v.shopify_id,
                "image": v.image,
                "sku": v.sku,
                "price": money(v.price_cents, "USD"),
                "hasSellingPlan": v.has_sp,
            })).collect::<Vec<_>>(),
        })
    }

    fn new_product(&mut self, i: usize, shopify_id: i64) -> Product {
        let r = &mut self.rng;
        let base = PRODUCTS[i % PRODUCTS.len()];
        let title = if i < PRODUCTS.len() {
            base.to_string()
        } else {
            format!("{base} No. {}", i / PRODUCTS.len() + 1)
        };
        let set = VARIANT_SETS.choose(r).expect("x");
        let base_price = r.random_range(299..6000);
        let sp = r.random_bool(0.85);
        let variants = set
            .iter()
            .enumerate()
            .map(|(k, t)| Variant {
                shopify_id: 40_000_000_000_000 + shopify_id % 10_000_000 * 10 + k as i64,
                title: t,
                sku: if r.random_bool(0.1) {
                    String::new()
                } else {
                    format!("SKU-{}-{}", shopify_id % 100_000, k + 1)
                },
                price_cents: base_price + k as i64 * 400,
                has_sp: sp,
                image: r.random_bool(0.8).then(|| {
                    format!(
                        "https://cdn.shopify.com/s/files/1/0000/0001/products/p{}_{}.jpg",
                        shopify_id % 100_000,
                        k
                    )
                }),
            })
            .collect();
        Product {
            shopify_id,
            title,
            variants,
        }
    }

    fn new_customer(&mut self, id: i64) -> Customer {
        let r = &mut self.rng;
        let first = r.random_range(0..FIRST.len());
        let last = if FIRST[first].1 == "lei" {
            14
        } else if FIRST[first].1 == "taro" {
            15
        } else {
            r.random_range(0..LAST.len())
        };
        let city = if last >= 14 && r.random_bool(0.7) {
            7
        } else {
            r.random_range(0..CITIES.len())
        };
        let email = format!(
            "{}.{}{}@{}",
            FIRST[first].1,
            LAST[last].1,
            id % 1000,
            DOMAINS.choose(r).expect("x")
        );
        let phone = r
            .random_bool(0.6)
            .then(|| format!("+1 415 555 {:04}", r.random_range(0..10000)));
        Customer {
            id,
            shopify_id: 6_200_000_000_000 + id * 13,
            first,
            last,
            email,
            phone,
            city,
        }
    }

    fn sub_currency(&mut self, customer: Option<usize>) -> &'static str {
        let city = customer.map(|c| self.customers[c].city);
        match city {
            Some(c) if self.rng.random_bool(0.8) => CITIES[c].currency,
            _ => weighted(
                &mut self.rng,
                &[
                    ("USD", 60),
                    ("EUR", 12),
                    ("GBP", 10),
                    ("CAD", 10),
                    ("JPY", 8),
                ],
            ),
        }
    }

    fn new_sub_info(&mut self, id: i64, created: i64) -> SubInfo {
        let customer =
            (!self.customers.is_empty()).then(|| self.rng.random_range(0..self.customers.len()));
        let currency = self.sub_currency(customer);
        let discounted = self.rng.random_bool(0.5);
        let lines = self.new_lines(currency, discounted);
        let delivery = if self.rng.random_bool(0.4) {
            0
        } else {
            from_usd(
                *[499i64, 599, 750, 999].choose(&mut self.rng).expect("x"),
                currency,
            )
        };
        SubInfo {
            id,
            created,
            customer,
            currency,
            lines,
            delivery,
        }
    }

    // -----------------------------------------------------------------------

    pub(crate) fn generate(cfg: &FakeConfig) -> Data {
        let mut d = Data {
            tables: (0..5).map(|_| Table::default()).collect(),
            rng: StdRng::seed_from_u64(cfg.seed),
            messy: cfg.messy_timestamps,
            products: Vec::new(),
            customers: Vec::new(),
            subs: Vec::new(),
            sub_draws: Vec::new(),
            next_line_id: 300_000,
            next_order_number: 1000,
            mutation_counter: 0,
        };
        let end = cfg.data_end.timestamp_millis();
        let start = end - 730 * DAY_MS;
        let hot_sec = (start + end) / 2 / 1000;
        let c = &cfg.counts;

        // Products (at least one internally, so lines can always be built).
        for i in 0..c.products.max(1) {
            let p = d.new_product(i, 7_000_000_000_000 + i as i64 * 1021);
            d.products.push(p);
        }
        // Customers.
        let mut cust_times = Vec::with_capacity(c.customers);
        for i in 0..c.customers {
            let cu = d.new_customer(5000 + i as i64);
            d.customers.push(cu);
            let cr = d.rng.random_range(start..end);
            cust_times.push((cr, d.rng.random_range(cr..=end)));
        }

        // Subscription timestamps.
        let shape = cfg.distribution.shape();
        let times = match shape {
            None => gen_times(
                &mut d.rng,
                c.subscriptions,
                start,
                end,
                hot_sec,
                cfg.hot_second_records,
                None,
            ),
            Some(shape) => shaped_times(&mut d.rng, shape, c.subscriptions, start, end, None),
        };
        for (i, &(cr, _, _)) in times.iter().enumerate() {
            let s = d.new_sub_info(1000 + i as i64, cr);
            d.subs.push(s);
        }
        let statuses: Vec<&'static str> = (0..c.subscriptions)
            .map(|_| {
                weighted(
                    &mut d.rng,
                    &[
                        ("ACTIVE", 60),
                        ("PAUSED", 15),
                        ("CANCELLED", 20),
                        ("EXPIRED", 5),
                    ],
                )
            })
            .collect();

        // Orders.
        let sub_created: Vec<i64> = times.iter().map(|t| t.0).collect();
        let otimes = match shape {
            _ if d.subs.is_empty() => Vec::new(),
            None => gen_times(
                &mut d.rng,
                c.orders,
                start,
                end,
                hot_sec,
                cfg.hot_second_records,
                Some(&sub_created),
            ),
            Some(shape) => {
                shaped_times(&mut d.rng, shape, c.orders, start, end, Some(&sub_created))
            }
        };
        let mut completed = vec![0i64; d.subs.len()];
        let mut last_pay: Vec<Option<&'static str>> = vec![None; d.subs.len()];
        let mut seen = vec![false; d.subs.len()];
        let mut orders = Vec::with_capacity(otimes.len());
        for &(cr, up, si) in &otimes {
            let si = si.expect("orders have a subscription");
            let mut status = weighted(
                &mut d.rng,
                &[
                    ("PAID", 70),
                    ("SKIPPED", 10),
                    ("FAILED", 8),
                    ("UNPROCESSED", 12),
                ],
            );
            if status == "UNPROCESSED" && up > end - 30 * DAY_MS {
                // fine: upcoming order
            } else if status == "UNPROCESSED" {
                status = "PAID";
            }
            let checkout = !seen[si];
            seen[si] = true;
            if checkout {
                // The checkout order is the one that created the subscription.
                status = "PAID";
            }
            let billing = if status == "UNPROCESSED" {
                end / 1000 + d.rng.random_range(3600..20 * 86400)
            } else {
                cr / 1000
            };
            if status == "PAID" {
                completed[si] += 1;
                last_pay[si] = Some("SUCCESS");
            } else if status == "FAILED" {
                last_pay[si] = Some("FAILED");
            }

            orders.push((cr, up, si, status, billing, checkout));
        }
        for (i, (cr, up, si, status, billing, checkout)) in orders.into_iter().enumerate() {
            let (cs, cr) = d.ts(cr, i64::MIN);
            let (us, up) = d.ts(up, cr);
            let v = d.order_json(50_000 + i as i64, si, status, &cs, &us, billing, checkout);
            let key = 50_000 + i as i64;
            d.tables[Stream::Orders as usize].push(Rec {
                key,
                created: cr,
                updated: up,
                tag: status,
                body: Body::text(&v),
            });
        }

        // Subscriptions JSON.
        let mut cust_counts = vec![[0i64; 4]; d.customers.len()];
        for (i, &(cr, up, _)) in times.iter().enumerate() {
            let status = statuses[i];
            if let Some(ci) = d.subs[i].customer {
                let k = ["ACTIVE", "PAUSED", "CANCELLED", "EXPIRED"]
                    .iter()
                    .position(|s| *s == status)
                    .unwrap_or(0);
                cust_counts[ci][k] += 1;
            }
            let created = d.stamp(cr, i64::MIN);
            let updated = d.stamp(up, created.ms);
            let draw =
                d.draw_subscription(i, created, updated, status, completed[i], last_pay[i], end);
            d.sub_draws.push(draw);
            let key = d.subs[i].id;
            d.tables[Stream::Subscriptions as usize].push(Rec {
                key,
                created: created.ms,
                updated: updated.ms,
                tag: status,
                body: Body::Subscription(i as u32),
            });
        }

        // Customers JSON.
        for (i, cu) in d.customers.iter().enumerate() {
            let v = Self::customer_json(cu, cust_counts[i]);
            let (cr, up) = cust_times[i];
            d.tables[Stream::Customers as usize].push(Rec {
                key: cu.id,
                created: cr,
                updated: up,
                tag: "",
                body: Body::text(&v),
            });
        }
        // Products JSON.
        for p in d.products.iter().take(c.products) {
            let cr = d.rng.random_range(start..end);
            let up = d.rng.random_range(cr..=end);
            let tag = if p.variants.iter().any(|v| v.has_sp) {
                "SP"
            } else {
                ""
            };
            let v = Self::product_json(p);
            d.tables[Stream::Products as usize].push(Rec {
                key: p.shopify_id,
                created: cr,
                updated: up,
                tag,
                body: Body::text(&v),
            });
        }

        // Activity logs: (createdAt, subscription, key), then stored in createdAt order.
        let mut logs: Vec<(i64, usize, &'static str)> = Vec::with_capacity(c.activity_logs);
        match shape {
            _ if d.subs.is_empty() => {}
            Some(shape) => {
                // A subscription_created event belongs at its subscription's createdAt,
                // not at a drawn instant, so drawn logs are the other events.
                let floor = sub_created[sub_created.len() / 10];
                for t in shape.draw(&mut d.rng, c.activity_logs, start, end, floor) {
                    let (t, si) = with_parent(&mut d.rng, t, &sub_created);
                    logs.push((t, si, weighted(&mut d.rng, &LOG_KEYS[1..])));
                }
            }
            None => {
                for _ in 0..c.activity_logs {
                    let si = d.rng.random_range(0..d.subs.len());
                    let key = weighted(&mut d.rng, LOG_KEYS);
                    let sc = d.subs[si].created;
                    let t = if key == "subscription_created" {
                        sc + d.rng.random_range(0..1500)
                    } else {
                        d.rng.random_range(sc..=end)
                    };
                    logs.push((t, si, key));
                }
            }
        }
        logs.sort_by_key(|l| l.0);
        for (i, (t, si, key)) in logs.into_iter().enumerate() {
            let id = 20_000 + i as i64;
            let (v, t) = d.log_json(id, si, key, t);
            d.tables[Stream::ActivityLogs as usize].push(Rec {
                key: id,
                created: t,
                updated: t,
                tag: "",
                body: Body::text(&v),
            });
        }
        d.rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed_f00d);
        d
    }

    /// The hand-made records of `seed`, served as written (see [`crate::seed`]).
    pub(crate) fn from_seed(cfg: &FakeConfig, seed: &crate::SeedData) -> Data {
        let empty = FakeConfig {
            counts: crate::Counts {
                subscriptions: 0,
                orders: 0,
                customers: 0,
                products: 0,
                activity_logs: 0,
            },
            ..cfg.clone()
        };
        let mut d = Data::generate(&empty);
        d.tables = (0..5).map(|_| Table::default()).collect();
        let end = cfg.data_end.timestamp_millis();
        for (name, records) in &seed.streams {
            let Some(s) = Stream::from_name(name) else {
                continue;
            };
            let key = crate::seed::key_field(name);
            let time = |r: &Value, f: &str| {
                r.get(f)
                    .and_then(Value::as_str)
                    .and_then(loop_time::parse_rfc3339_ms)
            };
            let mut recs: Vec<Rec> = records
                .iter()
                .map(|r| {
                    let created = time(r, "createdAt").unwrap_or(end);
                    let tag = match r.get("status").and_then(Value::as_str) {
                        Some(st) => SEED_TAGS.iter().copied().find(|t| *t == st).unwrap_or(""),
                        None if s == Stream::Products
                            && r["productVariants"].as_array().is_some_and(|vs| {
                                vs.iter().any(|v| v["hasSellingPlan"] == true)
                            }) =>
                        {
                            "SP"
                        }
                        None => "",
                    };
                    Rec {
                        key: r[key].as_i64().unwrap_or_default(),
                        created,
                        updated: time(r, "updatedAt").unwrap_or(created),
                        tag,
                        body: Body::text(r),
                    }
                })
                .collect();
            recs.sort_by_key(|r| r.key);
            for r in recs {
                d.tables[s as usize].push(r);
            }
        }
        d
    }

    fn log_json(&mut self, id: i64, si: usize, key: &str, t: i64) -> (Value, i64) {
        let source = *LOG_SOURCES.choose(&mut self.rng).expect("x");
        let (ts, t) = self.ts(t, i64::MIN);
        (
            json!({
                "id": id,
                "subscriptionId": self.subs[si].id,
                "key": key,
                "entity": "",
                "source": source,
                "createdAt": ts,
            }),
            t,
        )
    }

    // -----------------------------------------------------------------------
    // Mutations

    pub(crate) fn records(&self, s: Stream) -> Vec<Value> {
        self.table(s).recs.iter().map(|r| self.value(r)).collect()
    }

    /// The JSON text of a record's current version.
    pub(crate) fn text<'a>(&'a self, r: &'a Rec) -> Cow<'a, str> {
        match &r.body {
            Body::Text(t) => Cow::Borrowed(t),
            Body::Subscription(si) => Cow::Owned(self.subscription_value(*si as usize).to_string()),
        }
    }

    /// A record's current version.
    pub(crate) fn value(&self, r: &Rec) -> Value {
        match &r.body {
            Body::Text(t) => serde_json::from_str(t).expect("stored JSON is valid"),
            Body::Subscription(si) => self.subscription_value(*si as usize),
        }
    }

    /// The subscription whose current `shopifyId` is `shopify_id`.
    pub(crate) fn subscription_by_shopify_id(&self, shopify_id: i64) -> Option<&Rec> {
        let needle = format!("\"shopifyId\":{shopify_id},");
        self.table(Stream::Subscriptions)
            .recs
            .iter()
            .find(|r| match &r.body {
                Body::Subscription(si) => {
                    subscription_shopify_id(self.subs[*si as usize].id) == shopify_id
                }
                Body::Text(t) => t.contains(&needle),
            })
    }

    pub(crate) fn apply(&mut self, m: &Mutation, now_ms: i64) -> Vec<Value> {
        self.mutation_counter += 1;
        match m {
            Mutation::Touch { stream, count } => {
                let Some(s) = Stream::from_name(stream) else {
                    return Vec::new();
                };
                if s == Stream::ActivityLogs {
                    return self.create(s, *count, now_ms);
                }
                let n = self.table(s).recs.len();
                let k = (*count).min(n);
                let idxs = rand::seq::index::sample(&mut self.rng, n, k).into_vec();
                idxs.into_iter()
                    .map(|i| self.touch_one(s, i, now_ms))
                    .collect()
            }
            Mutation::TouchIds { stream, ids } => {
                let Some(s) = Stream::from_name(stream) else {
                    return Vec::new();
                };
                if s == Stream::ActivityLogs {
                    return Vec::new();
                }
                let idxs: Vec<usize> = ids
                    .iter()
                    .filter_map(|id| self.table(s).index_of(*id))
                    .collect();
                idxs.into_iter()
                    .map(|i| self.touch_one(s, i, now_ms))
                    .collect()
            }
            Mutation::Create { stream, count } => match Stream::from_name(stream) {
                Some(s) => self.create(s, *count, now_ms),
                None => Vec::new(),
            },
            Mutation::Patch { stream, id, fields } => {
                let Some(s) = Stream::from_name(stream) else {
                    return Vec::new();
                };
                let Some(idx) = self.table(s).index_of(*id) else {
                    return Vec::new();
                };
                let created = self.table(s).recs[idx].created;
                let mut v = self.value(&self.table(s).recs[idx]);
                let mut up = self.table(s).recs[idx].updated;
                if matches!(s, Stream::Subscriptions | Stream::Orders) {
                    let (us, u) = self.ts(now_ms.max(created), created);
                    v["updatedAt"] = json!(us);
                    up = u;
                }
                for (k, val) in fields {
                    v[k] = val.clone();
                }
                if let Some(t) = fields
                    .get("updatedAt")
                    .and_then(Value::as_str)
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                {
                    up = t.timestamp_millis();
                }
                let t = &mut self.tables[s as usize];
                t.recs[idx].body = Body::text(&v);
                t.set_updated(idx, up);
                vec![v]
            }
        }
    }

    fn touch_one(&mut self, s: Stream, idx: usize, now_ms: i64) -> Value {
        let rec = &self.tables[s as usize].recs[idx];
        let created = rec.created;
        let mut v = self.value(rec);
        let mut tag = rec.tag;
        let new_updated = now_ms.max(created);
        let (us, up) = self.ts(new_updated, created);
        let choice = self.rng.random_range(0..3);
        match s {
            Stream::Subscriptions => {
                let cur = v["currencyCode"].as_str().unwrap_or("USD").to_string();
                match choice {
                    0 => {
                        let (status, paused, cancelled): (&'static str, Value, Value) = match tag {
                            "ACTIVE" if self.rng.random_bool(0.5) => {
                                ("PAUSED", json!(us), Value::Null)
                            }
                            "ACTIVE" => ("CANCELLED", Value::Null, json!(us)),
                            _ => ("ACTIVE", Value::Null, Value::Null),
                        };
                        tag = status;
                        v["status"] = json!(status);
                        v["pausedAt"] = paused;
                        v["cancelledAt"] = cancelled.clone();
                        if cancelled.is_null() {
                            v["cancellationReason"] = Value::Null;
                            v["cancellationComment"] = Value::Null;
                        } else {
                            v["cancellationReason"] =
                                json!(REASONS.choose(&mut self.rng).expect("x"));
                            v["isMarkedForCancellation"] = json!(false);
                        }
                    }
                    1 => {
                        let next = match v["lastPaymentStatus"].as_str() {
                            Some("SUCCESS") => "FAILED",
                            _ => "SUCCESS",
                        };
                        v["lastPaymentStatus"] = json!(next);
                        if next == "SUCCESS" {
                            let n = v["completedOrdersCount"].as_i64().unwrap_or(0);
                            v["completedOrdersCount"] = json!(n + 1);
                        }
                    }
                    _ => {
                        let old = parse_money(v["deliveryPrice"].as_str().unwrap_or("0"));
                        let step = if cur == "JPY" { 100 } else { 50 };
                        v["deliveryPrice"] = json!(money(old + step, &cur));
                    }
                }
                v["updatedAt"] = json!(us);
            }
            Stream::Orders => {
                let cur = v["currencyCode"].as_str().unwrap_or("USD").to_string();
                let id = v["id"].as_i64().unwrap_or(0);
                match (tag, choice) {
                    ("UNPROCESSED" | "FAILED", _) => {
                        tag = "PAID";
                        v["status"] = json!("PAID");
                        v["shopifyId"] = json!(5_100_000_000_000i64 + id * 13);
                        self.next_order_number += 1;
                        v["shopifyOrderNumber"] = json!(self.next_order_number);
                        v["financialStatus"] = json!("PAID");
                        v["fulfillmentStatus"] = json!("UNFULFILLED");
                    }
                    ("PAID", 0) => {
                        v["fulfillmentStatus"] = json!("FULFILLED");
                        v["financialStatus"] = json!("PARTIALLY_REFUNDED");
                    }
                    ("SKIPPED", 0) => {
                        tag = "UNPROCESSED";
                        v["status"] = json!("UNPROCESSED");
                    }
                    _ => {
                        let old = parse_money(v["totalShippingPrice"].as_str().unwrap_or("0"));
                        let total = parse_money(v["totalPrice"].as_str().unwrap_or("0"));
                        let step = if cur == "JPY" { 100 } else { 50 };
                        v["totalShippingPrice"] = json!(money(old + step, &cur));
                        v["totalPrice"] = json!(money(total + step, &cur));
                        v["totalPriceUsd"] = json!(money(to_usd(total + step, &cur), "USD"));
                    }
                }
                v["updatedAt"] = json!(us);
            }
            Stream::Customers => {
                self.mutation_counter += 1;
                if choice == 0 {
                    v["phone"] = json!(format!(
                        "+44 20 7946 {:04}",
                        self.rng.random_range(0..10000)
                    ));
                } else {
                    let id = v["id"].as_i64().unwrap_or(0);
                    v["email"] = json!(format!(
                        "changed.{id}.{}@example.org",
                        self.mutation_counter
                    ));
                }
            }
            Stream::Products => {
                if let Some(pv) = v["productVariants"].get_mut(0) {
                    let old = parse_money(pv["price"].as_str().unwrap_or("0"));
                    pv["price"] = json!(money(old + 100, "USD"));
                }
            }
            Stream::ActivityLogs => {}
        }
        let t = &mut self.tables[s as usize];
        t.recs[idx].body = Body::text(&v);
        t.recs[idx].tag = tag;
        t.set_updated(idx, up);
        v
    }

    fn create(&mut self, s: Stream, count: usize, now_ms: i64) -> Vec<Value> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let v = match s {
                Stream::Subscriptions => {
                    let id = self.table(s).next_key(1000, 1);
                    let stamp = self.stamp(now_ms, i64::MIN);
                    let si = self.subs.len();
                    let info = self.new_sub_info(id, stamp.ms);
                    self.subs.push(info);
                    let draw = self.draw_subscription(si, stamp, stamp, "ACTIVE", 0, None, now_ms);
                    self.sub_draws.push(draw);
                    self.tables[s as usize].push(Rec {
                        key: id,
                        created: stamp.ms,
                        updated: stamp.ms,
                        tag: "ACTIVE",
                        body: Body::Subscription(si as u32),
                    });
                    self.subscription_value(si)
                }
                Stream::Orders => {
                    if self.subs.is_empty() {
                        break;
                    }
                    let id = self.table(s).next_key(50_000, 1);
                    let si = self.rng.random_range(0..self.subs.len());
                    let (cs, cr) = self.ts(now_ms, i64::MIN);
                    let status = if self.rng.random_bool(0.5) {
                        "PAID"
                    } else {
                        "UNPROCESSED"
                    };
                    let billing = if status == "PAID" {
                        cr / 1000
                    } else {
                        cr / 1000 + self.rng.random_range(3600..20 * 86400)
                    };
                    let v = self.order_json(id, si, status, &cs, &cs, billing, false);
                    self.tables[s as usize].push(Rec {
                        key: id,
                        created: cr,
                        updated: cr,
                        tag: status,
                        body: Body::text(&v),
                    });
                    v
                }
                Stream::Customers => {
                    let id = self.table(s).next_key(5000, 1);
                    let c = self.new_customer(id);
                    let v = Self::customer_json(&c, [0; 4]);
                    self.customers.push(c);
                    self.tables[s as usize].push(Rec {
                        key: id,
                        created: now_ms,
                        updated: now_ms,
                        tag: "",
                        body: Body::text(&v),
                    });
                    v
                }
                Stream::Products => {
                    let sid = self.table(s).next_key(7_000_000_000_000, 1021);
                    let i = self.table(s).recs.len();
                    let p = self.new_product(i, sid);
                    let tag = if p.variants.iter().any(|v| v.has_sp) {
                        "SP"
                    } else {
                        ""
                    };
                    let v = Self::product_json(&p);
                    self.tables[s as usize].push(Rec {
                        key: sid,
                        created: now_ms,
                        updated: now_ms,
                        tag,
                        body: Body::text(&v),
                    });
                    v
                }
                Stream::ActivityLogs => {
                    if self.subs.is_empty() {
                        break;
                    }
                    let id = self.table(s).next_key(20_000, 1);
                    let si = self.rng.random_range(0..self.subs.len());
                    let key = weighted(&mut self.rng, &LOG_KEYS[1..]);
                    let (v, t) = self.log_json(id, si, key, now_ms);
                    self.tables[s as usize].push(Rec {
                        key: id,
                        created: t,
                        updated: t,
                        tag: "",
                        body: Body::text(&v),
                    });
                    v
                }
            };
            out.push(v);
        }
        out
    }
}

/// (created, updated, parent index) triples sorted by created. With `parents` (the
/// created instants of the parent subscriptions), each record gets a parent created
/// before it. A `hot` number of records get an updatedAt inside second `hot_sec`, and
/// about 10% of the others reuse the updatedAt second of another record.
fn gen_times(
    rng: &mut StdRng,
    n: usize,
    start: i64,
    end: i64,
    hot_sec: i64,
    hot: usize,
    parents: Option<&[i64]>,
) -> Vec<(i64, i64, Option<usize>)> {
    let hot_ms = hot_sec * 1000;
    let mut v: Vec<(i64, i64, Option<usize>)> = Vec::with_capacity(n);
    for _ in 0..n {
        let parent = parents.map(|p| rng.random_range(0..p.len()));
        let lo = parent.map_or(start, |p| parents.expect("p")[p]);
        let cr = rng.random_range(lo..end.max(lo + 1));
        let up = if rng.random_bool(0.3) {
            cr
        } else {
            let u: f64 = rng.random::<f64>().sqrt();
            cr + ((end - cr) as f64 * u) as i64
        };
        v.push((cr, up, parent));
    }
    // Shared seconds.
    if n > 1 {
        for i in 0..n {
            if rng.random_bool(0.15) {
                let j = rng.random_range(0..n);
                let t = v[j].1 - v[j].1.rem_euclid(1000) + rng.random_range(0..1000);
                if j != i && t >= v[i].0 && t <= end {
                    v[i].1 = t;
                }
            }
        }
    }
    // The hot second.
    let k = hot.min(n);
    for i in rand::seq::index::sample(rng, n, k) {
        let mut parent = v[i].2;
        if let (Some(ps), Some(p)) = (parents, parent) {
            if ps[p] >= hot_ms - 1000 {
                // Find a parent created before the hot second (the hot parents are).
                parent = (0..64)
                    .map(|_| rng.random_range(0..ps.len()))
                    .find(|&q| ps[q] < hot_ms - 1000)
                    .or_else(|| ps.iter().position(|&t| t < hot_ms - 1000));
                if parent.is_none() {
                    continue;
                }
            }
        }
        let lo = match (parents, parent) {
            (Some(ps), Some(p)) => ps[p],
            _ => start,
        };
        let up = hot_ms + rng.random_range(0..1000);
        let cr = if v[i].0 <= hot_ms - 1000 && v[i].0 >= lo {
            v[i].0
        } else {
            rng.random_range(lo..hot_ms.max(lo + 1))
        };
        v[i] = (cr.min(up), up, parent);
    }
    v.sort_by_key(|x| x.0);
    v
}

/// (created, updated, parent index) triples sorted by created, updatedAt drawn from
/// `shape`. With `parents` (the created instants of the parent subscriptions, sorted),
/// each record gets a parent created at or before its updatedAt, and its own createdAt
/// between the two. 30 % were never updated (createdAt = updatedAt).
fn shaped_times(
    rng: &mut StdRng,
    shape: Shape,
    n: usize,
    start: i64,
    end: i64,
    parents: Option<&[i64]>,
) -> Vec<(i64, i64, Option<usize>)> {
    // Bursts only where a tenth of the parents already exist.
    let floor = parents.map_or(start, |p| p[p.len() / 10]);
    let mut v: Vec<(i64, i64, Option<usize>)> = shape
        .draw(rng, n, start, end, floor)
        .into_iter()
        .map(|up| {
            let (up, parent) = match parents {
                Some(ps) => {
                    let (up, p) = with_parent(rng, up, ps);
                    (up, Some(p))
                }
                None => (up, None),
            };
            let lo = parent
                .and_then(|p| parents.map(|ps| ps[p]))
                .unwrap_or(start);
            let cr = if rng.random_bool(0.3) {
                up
            } else {
                rng.random_range(lo..=up)
            };
            (cr, up, parent)
        })
        .collect();
    v.sort_by_key(|x| x.0);
    v
}

/// A parent (index into `parents`, sorted created instants) created at or before `t`,
/// chosen uniformly; before the first parent, the first one and `t` moved to its
/// creation.
fn with_parent(rng: &mut StdRng, t: i64, parents: &[i64]) -> (i64, usize) {
    match parents.partition_point(|&c| c <= t) {
        0 => (t.max(parents[0]), 0),
        eligible => (t, rng.random_range(0..eligible)),
    }
}

impl Data {
    /// A new version of record `id` (updatedAt = `now_ms`), built but not stored: the
    /// payload of a webhook for a version the API then no longer shows.
    pub(crate) fn version_not_stored(&self, s: Stream, id: i64, now_ms: i64) -> Option<Value> {
        let idx = self.table(s).index_of(id)?;
        let mut v = self.value(&self.table(s).recs[idx]);
        let created = self.table(s).recs[idx].created;
        v["updatedAt"] = Value::String(loop_time::format_ms(now_ms.max(created)));
        Some(v)
    }

    /// A record shaped like the stream's first one, with an `id` the API does not have
    /// (None when it does, or the stream is empty).
    pub(crate) fn entity_not_stored(&self, s: Stream, id: i64, now_ms: i64) -> Option<Value> {
        if self.table(s).index_of(id).is_some() {
            return None;
        }
        let mut v = self.value(self.table(s).recs.first()?);
        v["id"] = serde_json::json!(id);
        v["createdAt"] = Value::String(loop_time::format_ms(now_ms));
        v["updatedAt"] = Value::String(loop_time::format_ms(now_ms));
        Some(v)
    }
}
