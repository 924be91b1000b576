#!/usr/bin/env python3
"""Generate schemas/<stream>.json. Run once; the JSON files are the source of truth after edits.

One type per field (plus null): a union maps to no warehouse column type. Money is written in
the money_type = number form (src/normalize.rs rewrites it for money_type = string); ids are
integers, as Loop sends them.
"""
import json, os

def n(t):  # nullable
    if isinstance(t, dict):
        t = dict(t)
        ty = t.get("type")
        if ty is not None:
            t["type"] = (ty if isinstance(ty, list) else [ty]) + ["null"]
        return t
    return {"type": [t, "null"]}

S = lambda: n("string")
I = lambda: n("integer")
B = lambda: n("boolean")
TS = lambda: n({"type": "string", "format": "date-time"})
MONEY = lambda where="the record's currencyCode": {
    "type": ["number", "null"], "description": f"exact decimal amount in {where} (see money_unit and money_type)"}
ID = lambda: n("integer")
def obj(props, nullable=True):
    o = {"type": "object", "additionalProperties": True, "properties": props}
    return n(o) if nullable else o
def arr(items):
    return n({"type": "array", "items": items})

address = obj({k: S() for k in ["firstName", "lastName", "company", "address1", "address2", "city",
               "province", "provinceCode", "zip", "country", "countryCode", "phone"]})
line = obj({"id": ID(), "productShopifyId": ID(), "variantShopifyId": ID(), "sellingPlanShopifyId": ID(),
            "sellingPlanName": S(), "productTitle": S(), "variantTitle": S(), "price": MONEY(),
            "basePrice": MONEY(), "discountedPrice": MONEY(), "quantity": I(), "sku": S()})
policy = obj({"interval": n({"type": "string", "enum": ["DAY", "WEEK", "MONTH", "YEAR", None]}),
              "intervalCount": I(), "minCycles": I(), "maxCycles": I(), "anchorType": S(),
              "anchorDay": I(), "anchorMonth": I()})

subscription = {
    "id": {"type": "integer"}, "shopifyId": ID(), "originOrderShopifyId": ID(),
    "createdAt": TS(), "updatedAt": {"type": "string", "format": "date-time"},
    "status": S(), "pausedAt": TS(), "cancelledAt": TS(), "cancellationReason": S(),
    "cancellationComment": S(), "isMarkedForCancellation": B(), "completedOrdersCount": I(),
    "nextBillingDateEpoch": I(), "lastPaymentStatus": S(), "currencyCode": S(),
    "totalLineItemPrice": MONEY(), "totalLineItemDiscountedPrice": MONEY(), "deliveryPrice": MONEY(),
    "isPrepaid": B(), "billingPolicy": policy, "deliveryPolicy": policy,
    "deliveryMethod": obj({}), "shippingAddress": address, "billingAddress": address,
    "customer": obj({"id": ID(), "shopifyId": ID(), "email": S()}),
    "paymentMethod": obj({}), "discounts": arr({"type": ["object", "null"], "additionalProperties": True}),
    "attributes": arr(obj({"key": S(), "value": S()})), "lines": arr(line),
}
order = {
    "id": {"type": "integer"}, "shopifyId": ID(), "shopifyOrderNumber": ID(), "subscriptionId": ID(),
    "customer": obj({"id": ID(), "shopifyId": ID()}), "status": S(), "financialStatus": S(),
    "fulfillmentStatus": S(), "orderType": S(), "billingDateEpoch": I(),
    "createdAt": TS(), "updatedAt": {"type": "string", "format": "date-time"}, "currencyCode": S(),
    "totalPrice": MONEY(), "totalPriceUsd": MONEY("USD"), "totalTax": MONEY(), "totalDiscount": MONEY(),
    "totalShippingPrice": MONEY(), "lines": arr(line),
}
customer = {"id": {"type": "integer"}, "shopifyId": ID(), "email": S(), "firstName": S(), "lastName": S(),
            "phone": S(), **{k: I() for k in ["activeSubscriptionsCount", "pausedSubscriptionsCount",
            "cancelledSubscriptionsCount", "expiredSubscriptionsCount", "allSubscriptionsCount"]}}
product = {"shopifyId": {"type": "integer"}, "title": S(),
           "productVariants": arr(obj({"title": S(), "shopifyId": ID(), "image": S(), "sku": S(),
                                       "price": MONEY("the shop's currency"), "hasSellingPlan": B()}))}
activity = {"id": {"type": "integer"}, "subscriptionId": ID(), "key": S(), "entity": S(), "source": S(),
            "createdAt": {"type": "string", "format": "date-time"}}
webhook = {"id": {"type": "string", "description": "X-Loop-Webhook-Id"},
           "seq": {"type": "integer", "description": "journal sequence number (the cursor)"},
           "topic": {"type": "string"}, "api_version": S(), "created_at": TS(),
           "received_at": {"type": "string", "format": "date-time"}, "shop_domain": S(),
           "retry_count": I(), "entity_kind": S(), "entity_id": S(), "entity_updated_at": TS(),
           "payload": {"type": ["object", "null"],
                       "description": "the delivery's payload object, timestamps and money normalized as in the API streams"}}

def schema(title, props, required):
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": title, "type": "object",
            "additionalProperties": True, "required": required, "properties": props}

out = {"subscriptions": schema("Loop subscription", subscription, ["id", "updatedAt"]),
       "orders": schema("Loop order", order, ["id", "updatedAt"]),
       "customers": schema("Loop customer", customer, ["id"]),
       "products": schema("Loop product", product, ["shopifyId"]),
       "activity_logs": schema("Loop activity log entry", activity, ["id", "createdAt"]),
       "webhook_events": schema("Loop webhook event (from the receiver's journal)", webhook, ["id", "seq", "topic", "received_at"])}
root = os.path.join(os.path.dirname(__file__), "..", "schemas")
for name, s in out.items():
    with open(os.path.join(root, name + ".json"), "w") as f:
        json.dump(s, f, indent=2, ensure_ascii=False); f.write("\n")
