#!/usr/bin/env python3
"""Regenerates src/templates/*.json from Stripe's fixtures3.json.

The fixture values are placeholders; fields a real object of that kind would normally carry
as null are nulled here, the generator fills in the rest. Run from the crate directory:
    python3 tools/make_templates.py ../../../shared/stripe-fixtures/fixtures3.json
"""
import json, sys

NULLS = {
    "customer": ["discount", "shipping", "address"],
    "product": ["package_dimensions", "default_price", "description"],
    "price": ["custom_unit_amount", "transform_quantity", "recurring"],
    "payment_intent": ["canceled_at", "last_payment_error", "next_action", "processing", "transfer_data",
                       "payment_method_configuration_details", "shipping", "managed_payments"],
    "charge": ["source", "transfer_data", "shipping", "failure_balance_transaction"],
    "refund": [],
    "invoice": ["from_invoice", "last_finalization_error", "shipping_cost", "shipping_details", "customer_shipping",
                "customer_address", "due_date", "next_payment_attempt", "automatically_finalizes_at", "subscription",
                "total_pretax_credit_amounts", "total_taxes"],
    "invoice_payment": [],
    "checkout.session": ["after_expiration", "shipping_address_collection", "shipping_cost", "collected_information",
                         "currency_conversion", "consent", "consent_collection", "payment_method_configuration_details",
                         "saved_payment_method_options", "origin_context", "permissions", "managed_payments",
                         "adaptive_pricing", "discounts"],
    "subscription": ["billing_cycle_anchor_config", "cancel_at", "canceled_at", "ended_at", "pause_collection",
                     "pending_update", "transfer_data", "trial_end", "trial_start", "next_pending_invoice_item_invoice",
                     "pending_invoice_item_interval", "billing_thresholds", "managed_payments"],
    "subscription_item": ["billing_thresholds"],
    "line_item": ["pretax_credit_amounts", "taxes"],
    "item": ["adjustable_quantity"],
    "account": [],
    "discount": [],
    "event": [],
    "plan": ["transform_usage"],
}
NAMES = {"checkout.session": "checkout_session"}

res = json.load(open(sys.argv[1]))["resources"]
for kind, nulls in NULLS.items():
    obj = json.loads(json.dumps(res[kind]))
    for k in nulls:
        obj[k] = None
    if kind == "checkout.session":
        obj["custom_text"] = {k: None for k in obj["custom_text"]}
        obj["total_details"] = {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0}
        obj["invoice_creation"] = None
    if kind == "invoice":
        obj["lines"] = {"object": "list", "data": [], "has_more": False, "url": ""}
        obj["payment_settings"]["payment_method_options"] = None
        obj["parent"] = None
        obj["amount_overpaid"] = 0
    if kind == "subscription":
        obj["items"] = {"object": "list", "data": [], "has_more": False, "url": ""}
        obj["payment_settings"]["payment_method_options"] = None
        obj["billing_schedules"] = []
        obj["cancel_at_period_end"] = False
    if kind == "subscription_item":
        obj["price"] = None
        obj["plan"] = None
    if kind == "item":
        obj["price"] = None
    if kind == "charge":
        obj["refunds"] = {"object": "list", "data": [], "has_more": False, "url": ""}
        obj["outcome"] = {"advice_code": None, "network_advice_code": None, "network_decline_code": None,
                          "network_status": "approved_by_network", "reason": None, "risk_level": "normal",
                          "risk_score": 32, "seller_message": "Payment complete.", "type": "authorized"}
        pmd = obj["payment_method_details"]["card"]
        pmd["wallet"] = None
        pmd["installments"] = None
    if kind == "payment_intent":
        obj["amount_details"] = {"tip": {}}
    if kind == "event":
        obj["data"] = {"object": {}}
    out = NAMES.get(kind, kind)
    json.dump(obj, open(f"src/templates/{out}.json", "w"), sort_keys=True, separators=(",", ":"))
    print("wrote", out)
