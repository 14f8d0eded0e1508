#!/usr/bin/env python3
"""Oracle test: Stripe's official Python library against the simulator.

Usage: oracle.py BASE_URL. Exits non-zero (with a message) on the first disagreement.
Driven by the Rust test `oracle_official_python_client` in tests/sim.rs.
"""
import json
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import stripe

BASE = sys.argv[1].rstrip("/")
SECRET = "whsec_oracle_secret"


def sim(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def check(cond, msg):
    if not cond:
        print("ORACLE FAILURE:", msg, file=sys.stderr)
        sys.exit(1)


client = stripe.StripeClient(
    "sk_test_oracle_1234567890",
    base_addresses={"api": BASE, "connect": BASE},
    max_network_retries=0,
)
v1 = client.v1

accounts = sim("GET", "/_sim/accounts")
check(len(accounts) >= 2, "need at least two accounts")

RESOURCES = {
    "customers": (v1.customers, {}),
    "products": (v1.products, {}),
    "prices": (v1.prices, {}),
    "payment_intents": (v1.payment_intents, {}),
    "charges": (v1.charges, {}),
    "refunds": (v1.refunds, {}),
    "invoices": (v1.invoices, {}),
    "invoice_payments": (v1.invoice_payments, {}),
    "checkout_sessions": (v1.checkout.sessions, {}),
    "subscriptions": (v1.subscriptions, {"status": "all"}),
}

ids_by_account = {}
for acct in accounts:
    opts = {"stripe_account": acct["id"]}
    seen = {}
    for name, (service, extra) in RESOURCES.items():
        params = {"limit": 100, **extra}
        page = service.list(params=params, options=opts)
        objs = list(page.auto_paging_iter())
        check(len(objs) == acct["counts"][name], f"{acct['id']} {name}: paged {len(objs)}, sim counts {acct['counts'][name]}")
        created = [o.created for o in objs]
        check(created == sorted(created, reverse=True), f"{name} not newest first")
        ids = [o.id for o in objs]
        check(len(set(ids)) == len(ids), f"{name}: duplicate ids while paging")
        seen[name] = objs
    # Child lists page through their own endpoints.
    lines = 0
    for inv in seen["invoices"]:
        lines += len(list(v1.invoices.line_items.list(inv.id, params={"limit": 100}, options=opts).auto_paging_iter()))
    check(lines == acct["counts"]["invoice_line_items"], f"invoice lines {lines} != {acct['counts']['invoice_line_items']}")
    items = 0
    for cs in seen["checkout_sessions"]:
        items += len(list(v1.checkout.sessions.line_items.list(cs.id, params={"limit": 100}, options=opts).auto_paging_iter()))
    check(items == acct["counts"]["checkout_line_items"], f"checkout items {items} != {acct['counts']['checkout_line_items']}")
    # Small pages walk the same objects.
    small = [c.id for c in v1.customers.list(params={"limit": 3}, options=opts).auto_paging_iter()]
    check(small == [c.id for c in seen["customers"]], "limit=3 paging differs from limit=100 paging")
    # A created filter.
    created = sorted(c.created for c in seen["customers"])
    mid = created[len(created) // 2]
    filtered = list(v1.customers.list(params={"limit": 100, "created": {"gte": mid}}, options=opts).auto_paging_iter())
    expect = [c.id for c in seen["customers"] if c.created >= mid]
    check([c.id for c in filtered] == expect, "created[gte] filter disagrees")
    lt = list(v1.customers.list(params={"limit": 100, "created": {"lt": mid}}, options=opts).auto_paging_iter())
    check(len(lt) + len(filtered) == len(seen["customers"]), "created[lt] + created[gte] != all")
    # Expansions the sync uses.
    sessions = v1.checkout.sessions.list(params={"limit": 5, "expand": ["data.line_items"]}, options=opts)
    for s in sessions.data:
        check(s.line_items.object == "list", "expanded line_items missing")
    inv = seen["invoices"][0]
    full = v1.invoices.retrieve(inv.id, params={"expand": ["payments"]}, options=opts)
    check(full.payments.object == "list", "invoice payments not expanded")
    acc = v1.accounts.retrieve(acct["id"])
    check(acc.id == acct["id"] and acc.business_profile.name == acct["name"], "account retrieve")
    ids_by_account[acct["id"]] = {c.id for c in seen["customers"]}

# Two accounts are kept apart.
a, b = accounts[0]["id"], accounts[1]["id"]
check(not (ids_by_account[a] & ids_by_account[b]), "accounts share customers")
some = next(iter(ids_by_account[a]))
try:
    v1.customers.retrieve(some, options={"stripe_account": b})
    check(False, "account B can read account A's customer")
except stripe.InvalidRequestError as e:
    check(e.http_status == 404 and e.code == "resource_missing", f"cross-account read: {e.http_status} {e.code}")

# The SDK's own error class for a missing id.
try:
    v1.customers.retrieve("cus_doesnotexist0", options={"stripe_account": a})
    check(False, "missing customer was found")
except stripe.InvalidRequestError as e:
    check(e.http_status == 404 and e.code == "resource_missing" and e.param == "id", f"missing id: {e.http_status} {e.code}")

# Bad key.
try:
    stripe.StripeClient("pk_test_nope", base_addresses={"api": BASE}, max_network_retries=0).v1.customers.list()
    check(False, "publishable key accepted")
except stripe.AuthenticationError:
    pass

# Webhooks, verified with construct_event.
received = []
lock = threading.Lock()


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with lock:
            received.append((body.decode(), self.headers.get("Stripe-Signature")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Hook)
threading.Thread(target=server.serve_forever, daemon=True).start()
sim("POST", "/_sim/webhooks", {"url": f"http://127.0.0.1:{server.server_address[1]}/hook", "secret": SECRET, "connect": True})
result = sim("POST", f"/_sim/accounts/{a}/mutate", {"count": 6, "seed": 5})
expected = set(result["events"])
check(len(expected) >= 6, "mutate produced fewer events than changes")
deadline = time.time() + 30
while time.time() < deadline:
    with lock:
        if len(received) >= len(expected):
            break
    time.sleep(0.05)
with lock:
    got = list(received)
check(len(got) == len(expected), f"received {len(got)} webhooks, expected {len(expected)}")
for body, sig in got:
    event = stripe.Webhook.construct_event(body, sig, SECRET)
    check(event.id in expected, f"unexpected event {event.id}")
    check(event.account == a, "connect event without account")
    check(event.data.object.id, "event without data.object")
try:
    stripe.Webhook.construct_event(got[0][0].replace('"', "'", 1), got[0][1], SECRET)
    check(False, "tampered body verified")
except (stripe.SignatureVerificationError, ValueError):
    pass
# The events API agrees with what was delivered.
listed = {e.id for e in v1.events.list(params={"limit": 100}, options={"stripe_account": a}).auto_paging_iter()}
check(expected <= listed, "delivered events missing from /v1/events")

# Revocation: the SDK's permission error.
sim("POST", f"/_sim/accounts/{b}/revoke")
try:
    v1.customers.list(options={"stripe_account": b})
    check(False, "revoked account still readable")
except stripe.PermissionError as e:
    check(e.http_status == 403 and e.json_body["error"]["code"] == "account_invalid", f"revoked: {e.json_body}")

server.shutdown()
print(f"ORACLE OK: {len(accounts)} accounts, {len(got)} webhooks verified")
