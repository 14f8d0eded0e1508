//! The Stripe API routes under `/v1`.
// Handlers return the Stripe error response itself as the error: one per request at most, so
// boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};

use crate::store::{
    Account, CreatedRange, EVENT_RETENTION_SECONDS, Kind, ListError, ListQuery, Matcher,
};
use crate::{Sim, World};

pub type ApiResult<T> = Result<T, HttpResponse>;

// ---- errors ----

pub fn stripe_error(
    status: StatusCode,
    typ: &str,
    code: Option<&str>,
    message: &str,
    param: Option<&str>,
) -> HttpResponse {
    let mut e = Map::new();
    if let Some(c) = code {
        e.insert("code".into(), json!(c));
        e.insert(
            "doc_url".into(),
            json!(format!(
                "https://stripe.com/docs/error-codes/{}",
                c.replace('_', "-")
            )),
        );
    }
    e.insert("message".into(), json!(message));
    if let Some(p) = param {
        e.insert("param".into(), json!(p));
    }
    e.insert(
        "request_log_url".into(),
        json!("https://dashboard.stripe.com/test/logs"),
    );
    e.insert("type".into(), json!(typ));
    let mut res = HttpResponse::build(status);
    res.insert_header(("Request-Id", request_id()));
    if matches!(status.as_u16(), 429 | 500..=599) {
        res.insert_header(("Stripe-Should-Retry", "true"));
    }
    res.json(json!({ "error": e }))
}

pub fn invalid(message: &str, param: Option<&str>) -> HttpResponse {
    stripe_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        None,
        message,
        param,
    )
}

pub fn missing(kind_noun: &str, id: &str, param: &str) -> HttpResponse {
    stripe_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("resource_missing"),
        &format!("No such {kind_noun}: '{id}'"),
        Some(param),
    )
}

fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!("req_sim{:012}", N.fetch_add(1, Ordering::Relaxed))
}

pub fn redact(key: &str) -> String {
    let (prefix, rest) = match key.get(..8) {
        Some(p) if key.starts_with("sk_test_") || key.starts_with("sk_live_") => (p, &key[8..]),
        _ => ("", key),
    };
    let tail: String = rest
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!(
        "{prefix}{}{tail}",
        "*".repeat(rest.chars().count().saturating_sub(4))
    )
}

// ---- authentication ----

/// The platform key from `Authorization` (Bearer, or Basic with the key as user name).
pub fn api_key(req: &HttpRequest) -> ApiResult<String> {
    let Some(h) = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
    else {
        return Err(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
            None,
        ));
    };
    let key = if let Some(k) = h.strip_prefix("Bearer ") {
        k.trim().to_string()
    } else if let Some(b) = h.strip_prefix("Basic ") {
        decode_basic(b.trim()).unwrap_or_default()
    } else {
        String::new()
    };
    let valid = (key.starts_with("sk_test_") || key.starts_with("sk_live_")) && key.len() > 8;
    if !valid {
        return Err(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("api_key_invalid"),
            &format!("Invalid API Key provided: {}", redact(&key)),
            None,
        ));
    }
    Ok(key)
}

fn decode_basic(b64: &str) -> Option<String> {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits: u32 = 0;
    let mut n = 0;
    let mut out = Vec::new();
    for c in b64.bytes().filter(|c| *c != b'=') {
        let v = ALPHA.iter().position(|a| *a == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    let s = String::from_utf8(out).ok()?;
    Some(s.split(':').next().unwrap_or_default().to_string())
}

pub fn account_invalid(key: &str, account: &str) -> HttpResponse {
    stripe_error(
        StatusCode::FORBIDDEN,
        "invalid_request_error",
        Some("account_invalid"),
        &format!(
            "The provided key '{}' does not have access to account '{account}' (or that account does not exist). Application access may have been revoked.",
            redact(key)
        ),
        None,
    )
}

/// The account a request acts on: `Stripe-Account`, else the platform.
pub fn resolve<'w>(world: &'w World, req: &HttpRequest, key: &str) -> ApiResult<&'w Account> {
    match req
        .headers()
        .get("stripe-account")
        .and_then(|h| h.to_str().ok())
    {
        None => world
            .account(&world.platform)
            .ok_or_else(|| account_invalid(key, "platform")),
        Some(id) => match world.account(id.trim()) {
            Some(a) if !a.revoked => Ok(a),
            _ => Err(account_invalid(key, id.trim())),
        },
    }
}

// ---- query parameters ----

#[derive(Debug, Default)]
pub struct Params {
    pub limit: Option<usize>,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
    pub created: CreatedRange,
    pub expand: Vec<String>,
    pub types: Vec<String>,
    pub other: Vec<(String, String)>,
}

fn int(v: &str, param: &str) -> ApiResult<i64> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| invalid(&format!("Invalid integer: {v}"), Some(param)))
}

fn normalize(k: &str) -> String {
    // `expand[]`, `expand[0]` → `expand`; `types[3]` → `types`.
    if let Some((base, rest)) = k.split_once('[')
        && (base == "expand" || base == "types" || base == "include")
        && rest
            .trim_end_matches(']')
            .chars()
            .all(|c| c.is_ascii_digit())
    {
        return base.to_string();
    }
    k.to_string()
}

pub fn parse_params(qs: &str) -> ApiResult<Params> {
    let mut p = Params::default();
    for (k, v) in url::form_urlencoded::parse(qs.as_bytes()) {
        let (k, v) = (normalize(&k), v.into_owned());
        match k.as_str() {
            "limit" => {
                let n = int(&v, "limit")?;
                if !(1..=100).contains(&n) {
                    return Err(invalid(
                        &format!(
                            "Invalid limit: must be between 1 and 100 (it currently is '{n}')"
                        ),
                        Some("limit"),
                    ));
                }
                p.limit = Some(n as usize);
            }
            "starting_after" if !v.is_empty() => p.starting_after = Some(v),
            "ending_before" if !v.is_empty() => p.ending_before = Some(v),
            // An empty cursor means "no cursor" (some clients send the key unconditionally).
            "starting_after" | "ending_before" => {}
            "created" => {
                let t = int(&v, "created")?;
                p.created.min = Some(p.created.min.map_or(t, |m| m.max(t)));
                p.created.max = Some(p.created.max.map_or(t, |m| m.min(t)));
            }
            "created[gt]" | "created[gte]" => {
                let t = int(&v, &k)? + i64::from(k == "created[gt]");
                p.created.min = Some(p.created.min.map_or(t, |m| m.max(t)));
            }
            "created[lt]" | "created[lte]" => {
                let t = int(&v, &k)? - i64::from(k == "created[lt]");
                p.created.max = Some(p.created.max.map_or(t, |m| m.min(t)));
            }
            "expand" => p.expand.push(v),
            "types" => p.types.push(v),
            _ => p.other.push((k, v)),
        }
    }
    if p.starting_after.is_some() && p.ending_before.is_some() {
        return Err(invalid(
            "You may only specify one of these parameters: ending_before, starting_after.",
            Some("ending_before"),
        ));
    }
    Ok(p)
}

fn check_expand(p: &Params, list: bool) -> ApiResult<()> {
    for e in &p.expand {
        let depth = e.split('.').count() - usize::from(list && e.starts_with("data."));
        if depth > 4 {
            return Err(invalid(
                &format!("You cannot expand more than 4 levels of a property. Property: {e}"),
                Some("expand"),
            ));
        }
    }
    Ok(())
}

fn no_other(p: &Params) -> ApiResult<()> {
    match p.other.first() {
        Some((k, _)) => Err(invalid(
            &format!("Received unknown parameter: {k}"),
            Some(k),
        )),
        None => Ok(()),
    }
}

/// The list query for `kind`, validating every parameter as Stripe does.
fn list_query(kind: Kind, p: &Params, now: i64) -> ApiResult<ListQuery> {
    let mut q = ListQuery {
        limit: p.limit.unwrap_or(10),
        starting_after: p.starting_after.clone(),
        ending_before: p.ending_before.clone(),
        created: p.created,
        filters: Vec::new(),
    };
    let filters = kind.filters();
    let mut status_seen = false;
    for (k, v) in &p.other {
        if kind == Kind::Event && k == "delivery_success" {
            continue;
        }
        if kind == Kind::Subscription && k == "status" {
            status_seen = true;
            let m = match v.as_str() {
                "all" => continue,
                "ended" => Matcher::AnyOf(vec!["canceled".into(), "incomplete_expired".into()]),
                s => Matcher::Eq(s.to_string()),
            };
            if let Some(i) = filters.iter().position(|(n, _)| *n == "status") {
                q.filters.push((i, m));
            }
            continue;
        }
        match filters.iter().position(|(n, _)| n == k) {
            Some(i) if kind == Kind::Event => {
                if v.contains('*') {
                    q.filters.push((i, Matcher::Globs(vec![v.clone()])));
                } else {
                    q.filters.push((i, Matcher::Eq(v.clone())));
                }
            }
            Some(i) => q.filters.push((i, Matcher::Eq(v.clone()))),
            None => {
                return Err(invalid(
                    &format!("Received unknown parameter: {k}"),
                    Some(k),
                ));
            }
        }
    }
    if kind == Kind::Subscription
        && !status_seen
        && let Some(i) = filters.iter().position(|(n, _)| *n == "status")
    {
        q.filters.push((
            i,
            Matcher::Not(vec!["canceled".into(), "incomplete_expired".into()]),
        ));
    }
    if !p.types.is_empty() {
        if kind != Kind::Event {
            return Err(invalid("Received unknown parameter: types", Some("types")));
        }
        if p.types.len() > 20 {
            return Err(invalid(
                "You may filter by at most 20 event types.",
                Some("types"),
            ));
        }
        if q.filters.iter().any(|(i, _)| *i == 0) {
            return Err(invalid(
                "You may only specify one of these parameters: type, types.",
                Some("types"),
            ));
        }
        q.filters.push((0, Matcher::Globs(p.types.clone())));
    }
    if kind == Kind::Event {
        let floor = now - EVENT_RETENTION_SECONDS;
        q.created.min = Some(q.created.min.map_or(floor, |m| m.max(floor)));
    }
    Ok(q)
}

// ---- rendering and expansion ----

fn ok_json(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Request-Id", request_id()))
        .insert_header(("Stripe-Version", crate::store::API_VERSION))
        .body(body)
}

fn splice_list(url: &str, items: &[Arc<str>], has_more: bool) -> String {
    let size: usize = items.iter().map(|j| j.len() + 1).sum();
    let mut s = String::with_capacity(size + url.len() + 64);
    s.push_str("{\"object\":\"list\",\"data\":[");
    for (i, j) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(j);
    }
    s.push_str("],\"has_more\":");
    s.push_str(if has_more { "true" } else { "false" });
    s.push_str(",\"url\":");
    s.push_str(&Value::String(url.to_string()).to_string());
    s.push('}');
    s
}

fn render_list(
    acct: &Account,
    url: &str,
    items: &[Arc<str>],
    has_more: bool,
    expand: &[String],
) -> ApiResult<String> {
    if expand.is_empty() {
        return Ok(splice_list(url, items, has_more));
    }
    // Fast path: every expansion is one level below each item (`data.customer`,
    // `data.line_items`): splice stored JSON instead of building values.
    let fields: Option<Vec<&str>> = expand
        .iter()
        .map(|e| e.strip_prefix("data.").filter(|f| !f.contains('.')))
        .collect();
    if let Some(fields) = fields {
        let mut out: Vec<Arc<str>> = Vec::with_capacity(items.len());
        for j in items {
            let x = expand_raw(acct, j, &fields).map_err(|bad| cannot_expand(&bad))?;
            out.push(Arc::from(x));
        }
        return Ok(splice_list(url, &out, has_more));
    }
    let data: Vec<Value> = items
        .iter()
        .filter_map(|j| serde_json::from_str(j).ok())
        .collect();
    let mut v = json!({"object": "list", "data": data, "has_more": has_more, "url": url});
    expand_all(acct, &mut v, expand)?;
    Ok(v.to_string())
}

fn deleted_stub(kind: Kind, id: &str) -> Value {
    json!({"id": id, "object": kind.object(), "deleted": true})
}

/// The object with this id, as an expansion shows it.
fn lookup(acct: &Account, id: &str) -> Option<Value> {
    if id == acct.id {
        return Some(acct.object.clone());
    }
    let (kind, e) = acct.find(id)?;
    if e.deleted {
        return Some(deleted_stub(kind, id));
    }
    serde_json::from_str(&e.json).ok()
}

fn cannot_expand(field: &str) -> HttpResponse {
    invalid(
        &format!("This property cannot be expanded ({field})."),
        Some("expand"),
    )
}

/// The stored JSON of an object by id, as an expansion shows it.
fn lookup_raw(acct: &Account, id: &str) -> Option<Arc<str>> {
    if id == acct.id {
        return Some(Arc::from(acct.object.to_string()));
    }
    let (kind, e) = acct.find(id)?;
    if e.deleted {
        return Some(Arc::from(deleted_stub(kind, id).to_string()));
    }
    Some(e.json.clone())
}

fn child_list_raw(items: &[(Arc<str>, Arc<str>)], url: &str) -> String {
    let first: Vec<Arc<str>> = items.iter().take(10).map(|(_, j)| j.clone()).collect();
    splice_list(url, &first, items.len() > 10)
}

/// The includable lists: a session's `line_items`, an invoice's `payments`.
fn virtual_raw(acct: &Account, object: &str, id: &str, field: &str) -> Option<String> {
    match (object, field) {
        ("checkout.session", "line_items") => {
            let items = acct
                .children(Kind::CheckoutSession, id)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            Some(child_list_raw(
                items,
                &format!("/v1/checkout/sessions/{id}/line_items"),
            ))
        }
        ("invoice", "payments") => {
            let col = acct.col(Kind::InvoicePayment);
            let items: Vec<(Arc<str>, Arc<str>)> = col
                .ids_where(0, id)
                .iter()
                .take(11)
                .filter_map(|i| col.get(i).map(|e| (i.clone(), e.json.clone())))
                .collect();
            Some(child_list_raw(
                &items,
                &format!("/v1/invoice_payments?invoice={id}"),
            ))
        }
        _ => None,
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Index of the quote closing the string that opens at `start`.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// End (exclusive) of the JSON value that starts at `start`.
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    match *b.get(start)? {
        b'"' => Some(string_end(b, start)? + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = string_end(b, i)? + 1;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let mut i = start;
            while i < b.len() && !matches!(b[i], b',' | b'}' | b']') && !b[i].is_ascii_whitespace()
            {
                i += 1;
            }
            Some(i)
        }
    }
}

/// Top-level members of a JSON object (key as written, raw value), or the elements of an
/// array (empty keys), found by scanning: no allocation per value.
fn members(json: &str) -> Option<Vec<(&str, &str)>> {
    let b = json.as_bytes();
    let mut i = skip_ws(b, 0);
    let (object, close) = match b.get(i)? {
        b'{' => (true, b'}'),
        b'[' => (false, b']'),
        _ => return None,
    };
    i += 1;
    let mut out = Vec::with_capacity(if object { 64 } else { 4 });
    loop {
        i = skip_ws(b, i);
        let c = *b.get(i)?;
        if c == close {
            return Some(out);
        }
        if c == b',' {
            i += 1;
            continue;
        }
        let mut key = "";
        if object {
            if c != b'"' {
                return None;
            }
            let ke = string_end(b, i)?;
            key = json.get(i + 1..ke)?;
            i = skip_ws(b, ke + 1);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
        }
        let ve = value_end(b, i)?;
        out.push((key, json.get(i..ve)?));
        i = ve;
    }
}

fn unquote(raw: &str) -> Option<String> {
    if raw.contains('\\') {
        serde_json::from_str(raw).ok()
    } else {
        raw.strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .map(str::to_string)
    }
}

/// Expands top-level fields of one stored object by splicing stored JSON.
fn expand_raw(acct: &Account, json: &str, fields: &[&str]) -> Result<String, String> {
    let map = members(json).ok_or_else(|| "object".to_string())?;
    let get = |k: &str| map.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let object = get("object").and_then(unquote).unwrap_or_default();
    let id = get("id").and_then(unquote).unwrap_or_default();
    let resolve = |field: &str, raw: &str| -> Result<Option<String>, String> {
        let Some(target) = unquote(raw) else {
            return Err(field.to_string());
        };
        let found = if field == "coupon" {
            acct.coupons.get(&target).map(Value::to_string)
        } else {
            lookup_raw(acct, &target).map(|a| a.to_string())
        };
        match found {
            Some(x) => Ok(Some(x)),
            None if Kind::from_id(&target).is_some() || field == "coupon" => Ok(None),
            None => Err(field.to_string()),
        }
    };
    let mut replaced: Vec<(&str, String)> = Vec::new();
    for f in fields {
        let f = *f;
        if replaced.iter().any(|(k, _)| *k == f) {
            continue;
        }
        match get(f) {
            None => match virtual_raw(acct, &object, &id, f) {
                Some(x) => replaced.push((f, x)),
                None => return Err(f.to_string()),
            },
            Some(raw) if raw.starts_with('"') => {
                if let Some(x) = resolve(f, raw)? {
                    replaced.push((f, x));
                }
            }
            Some(raw) if raw.starts_with('[') => {
                let elems = members(raw).ok_or_else(|| f.to_string())?;
                let mut out = String::from("[");
                for (i, (_, r)) in elems.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    match r
                        .starts_with('"')
                        .then(|| resolve(f, r))
                        .transpose()?
                        .flatten()
                    {
                        Some(x) => out.push_str(&x),
                        None => out.push_str(r),
                    }
                }
                out.push(']');
                replaced.push((f, out));
            }
            Some(raw) if raw == "null" || raw.starts_with('{') => {}
            Some(_) => return Err(f.to_string()),
        }
    }
    let extra: usize = replaced.iter().map(|(k, x)| k.len() + x.len() + 4).sum();
    let mut out = String::with_capacity(json.len() + extra);
    out.push('{');
    let mut push = |k: &str, v: &str| {
        if out.len() > 1 {
            out.push(',');
        }
        out.push('"');
        out.push_str(k);
        out.push_str("\":");
        out.push_str(v);
    };
    for (k, raw) in &map {
        match replaced.iter().find(|(f, _)| f == k) {
            Some((_, x)) => push(k, x),
            None => push(k, raw),
        }
    }
    for (k, x) in &replaced {
        if get(k).is_none() {
            push(k, x);
        }
    }
    out.push('}');
    Ok(out)
}

fn child_list(items: &[(Arc<str>, Arc<str>)], url: String) -> Value {
    let data: Vec<Value> = items
        .iter()
        .take(10)
        .filter_map(|(_, j)| serde_json::from_str(j).ok())
        .collect();
    json!({"object": "list", "data": data, "has_more": items.len() > 10, "url": url})
}

pub fn expand_all(acct: &Account, v: &mut Value, paths: &[String]) -> ApiResult<()> {
    for p in paths {
        let segs: Vec<&str> = p.split('.').collect();
        expand_path(acct, v, &segs).map_err(|bad| {
            invalid(
                &format!("This property cannot be expanded ({bad})."),
                Some("expand"),
            )
        })?;
    }
    Ok(())
}

/// Replaces an id with its object; objects and nulls stay as they are.
fn resolve_in_place(acct: &Account, field: &str, v: &mut Value) -> Result<(), String> {
    match v {
        Value::String(id) => {
            let found = if field == "coupon" {
                acct.coupons.get(id.as_str()).cloned()
            } else {
                lookup(acct, id)
            };
            match found {
                Some(obj) => *v = obj,
                None if Kind::from_id(id).is_some() || field == "coupon" => {}
                None => return Err(field.to_string()),
            }
            Ok(())
        }
        Value::Bool(_) | Value::Number(_) => Err(field.to_string()),
        _ => Ok(()),
    }
}

fn expand_path(acct: &Account, v: &mut Value, segs: &[&str]) -> Result<(), String> {
    let Some((first, rest)) = segs.split_first() else {
        return Ok(());
    };
    match v {
        Value::Array(items) => {
            for it in items {
                expand_path(acct, it, segs)?;
            }
            Ok(())
        }
        Value::Object(m) => {
            if !m.contains_key(*first) {
                let object = m
                    .get("object")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let id = m
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let virtual_field = match (object.as_str(), *first) {
                    ("checkout.session", "line_items") => {
                        let items = acct
                            .children(Kind::CheckoutSession, &id)
                            .map(Vec::as_slice)
                            .unwrap_or(&[]);
                        child_list(items, format!("/v1/checkout/sessions/{id}/line_items"))
                    }
                    ("invoice", "payments") => {
                        let ids = acct.col(Kind::InvoicePayment).ids_where(0, &id);
                        let items: Vec<(Arc<str>, Arc<str>)> = ids
                            .iter()
                            .take(11)
                            .filter_map(|i| {
                                acct.col(Kind::InvoicePayment)
                                    .get(i)
                                    .map(|e| (i.clone(), e.json.clone()))
                            })
                            .collect();
                        child_list(&items, format!("/v1/invoice_payments?invoice={id}"))
                    }
                    _ => return Err(first.to_string()),
                };
                m.insert(first.to_string(), virtual_field);
            }
            let Some(child) = m.get_mut(*first) else {
                return Err(first.to_string());
            };
            if let Value::Array(items) = child {
                for it in items.iter_mut() {
                    resolve_in_place(acct, first, it)?;
                }
            } else {
                resolve_in_place(acct, first, child)?;
            }
            expand_path(acct, child, rest)
        }
        Value::Null => Ok(()),
        _ => Err(first.to_string()),
    }
}

// ---- handlers ----

async fn list(kind: Kind, req: HttpRequest, sim: web::Data<Sim>) -> HttpResponse {
    list_inner(kind, &req, &sim).unwrap_or_else(|e| e)
}

fn list_inner(kind: Kind, req: &HttpRequest, sim: &Sim) -> ApiResult<HttpResponse> {
    let key = api_key(req)?;
    let p = parse_params(req.query_string())?;
    check_expand(&p, true)?;
    let q = list_query(kind, &p, sim.now())?;
    let world = sim.read();
    let acct = resolve(&world, req, &key)?;
    let page = acct.col(kind).list(&q).map_err(|e| match e {
        ListError::MissingCursor(param, id) => missing(kind.noun(), &id, param),
    })?;
    let body = render_list(acct, kind.list_url(), &page.items, page.has_more, &p.expand)?;
    Ok(ok_json(body))
}

async fn retrieve(
    kind: Kind,
    req: HttpRequest,
    id: web::Path<String>,
    sim: web::Data<Sim>,
) -> HttpResponse {
    retrieve_inner(kind, &req, &id, &sim).unwrap_or_else(|e| e)
}

fn retrieve_inner(kind: Kind, req: &HttpRequest, id: &str, sim: &Sim) -> ApiResult<HttpResponse> {
    let key = api_key(req)?;
    let p = parse_params(req.query_string())?;
    no_other(&p)?;
    check_expand(&p, false)?;
    let now = sim.now();
    let world = sim.read();
    let acct = resolve(&world, req, &key)?;
    let e = acct
        .col(kind)
        .get(id)
        .ok_or_else(|| missing(kind.noun(), id, "id"))?;
    if kind == Kind::Event && e.created < now - EVENT_RETENTION_SECONDS {
        return Err(missing(kind.noun(), id, "id"));
    }
    if e.deleted {
        return Ok(ok_json(deleted_stub(kind, id).to_string()));
    }
    if p.expand.is_empty() {
        return Ok(ok_json(e.json.to_string()));
    }
    if p.expand.iter().all(|x| !x.contains('.')) {
        let fields: Vec<&str> = p.expand.iter().map(String::as_str).collect();
        return Ok(ok_json(
            expand_raw(acct, &e.json, &fields).map_err(|bad| cannot_expand(&bad))?,
        ));
    }
    let mut v: Value = serde_json::from_str(&e.json).unwrap_or(Value::Null);
    expand_all(acct, &mut v, &p.expand)?;
    Ok(ok_json(v.to_string()))
}

/// Pages a child list kept in order (invoice lines, session line items, subscription items).
fn page_children(
    items: &[(Arc<str>, Arc<str>)],
    p: &Params,
    noun: &str,
) -> ApiResult<(Vec<Arc<str>>, bool)> {
    let limit = p.limit.unwrap_or(10);
    let pos = |id: &str, param: &str| -> ApiResult<usize> {
        items
            .iter()
            .position(|(i, _)| &**i == id)
            .ok_or_else(|| missing(noun, id, param))
    };
    let (from, to) = if let Some(a) = &p.starting_after {
        let s = pos(a, "starting_after")? + 1;
        (s, (s + limit).min(items.len()))
    } else if let Some(b) = &p.ending_before {
        let e = pos(b, "ending_before")?;
        (e.saturating_sub(limit), e)
    } else {
        (0, limit.min(items.len()))
    };
    let has_more = if p.ending_before.is_some() {
        from > 0
    } else {
        to < items.len()
    };
    Ok((
        items[from..to].iter().map(|(_, j)| j.clone()).collect(),
        has_more,
    ))
}

async fn children(
    kind: Kind,
    req: HttpRequest,
    id: web::Path<String>,
    sim: web::Data<Sim>,
) -> HttpResponse {
    children_inner(kind, &req, &id, &sim).unwrap_or_else(|e| e)
}

fn children_inner(kind: Kind, req: &HttpRequest, id: &str, sim: &Sim) -> ApiResult<HttpResponse> {
    let key = api_key(req)?;
    let p = parse_params(req.query_string())?;
    no_other(&p)?;
    check_expand(&p, true)?;
    let world = sim.read();
    let acct = resolve(&world, req, &key)?;
    if acct.col(kind).get(id).is_none_or(|e| e.deleted) {
        return Err(missing(kind.noun(), id, "id"));
    }
    let (url, noun) = match kind {
        Kind::Invoice => (format!("/v1/invoices/{id}/lines"), "invoice line item"),
        _ => (
            format!("/v1/checkout/sessions/{id}/line_items"),
            "line item",
        ),
    };
    let empty = Vec::new();
    let items = acct.children(kind, id).unwrap_or(&empty);
    let (page, has_more) = page_children(items, &p, noun)?;
    Ok(ok_json(render_list(
        acct, &url, &page, has_more, &p.expand,
    )?))
}

async fn subscription_items(req: HttpRequest, sim: web::Data<Sim>) -> HttpResponse {
    subscription_items_inner(&req, &sim).unwrap_or_else(|e| e)
}

fn subscription_items_inner(req: &HttpRequest, sim: &Sim) -> ApiResult<HttpResponse> {
    let key = api_key(req)?;
    let mut p = parse_params(req.query_string())?;
    check_expand(&p, true)?;
    let sub = match p.other.iter().position(|(k, _)| k == "subscription") {
        Some(i) => p.other.remove(i).1,
        None => {
            return Err(invalid(
                "Missing required param: subscription.",
                Some("subscription"),
            ));
        }
    };
    no_other(&p)?;
    let world = sim.read();
    let acct = resolve(&world, req, &key)?;
    let v = acct
        .col(Kind::Subscription)
        .value(&sub)
        .ok_or_else(|| missing("subscription", &sub, "subscription"))?;
    let items: Vec<(Arc<str>, Arc<str>)> = v["items"]["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|it| {
                    (
                        Arc::from(it["id"].as_str().unwrap_or_default()),
                        Arc::from(it.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let (page, has_more) = page_children(&items, &p, "subscription_item")?;
    let url = "/v1/subscription_items";
    Ok(ok_json(render_list(acct, url, &page, has_more, &p.expand)?))
}

async fn own_account(req: HttpRequest, sim: web::Data<Sim>) -> HttpResponse {
    (|| -> ApiResult<HttpResponse> {
        let key = api_key(&req)?;
        let world = sim.read();
        let acct = resolve(&world, &req, &key)?;
        Ok(ok_json(acct.object.to_string()))
    })()
    .unwrap_or_else(|e| e)
}

async fn account_by_id(
    req: HttpRequest,
    id: web::Path<String>,
    sim: web::Data<Sim>,
) -> HttpResponse {
    (|| -> ApiResult<HttpResponse> {
        let key = api_key(&req)?;
        let world = sim.read();
        resolve(&world, &req, &key)?;
        match world.account(&id) {
            Some(a) if !a.revoked => Ok(ok_json(a.object.to_string())),
            _ => Err(account_invalid(&key, &id)),
        }
    })()
    .unwrap_or_else(|e| e)
}

async fn unknown(req: HttpRequest) -> HttpResponse {
    stripe_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        None,
        &format!(
            "Unrecognized request URL ({}: {}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.",
            req.method(),
            req.path()
        ),
        None,
    )
}

macro_rules! resource {
    ($scope:expr, $kind:expr, $path:literal) => {{
        let k = $kind;
        $scope
            .route(
                $path,
                web::get().to(move |r: HttpRequest, s: web::Data<Sim>| list(k, r, s)),
            )
            .route(
                concat!($path, "/{id}"),
                web::get().to(
                    move |r: HttpRequest, id: web::Path<String>, s: web::Data<Sim>| {
                        retrieve(k, r, id, s)
                    },
                ),
            )
    }};
}

pub fn scope() -> actix_web::Scope {
    let s = web::scope("/v1")
        .route("/account", web::get().to(own_account))
        .route("/accounts/{id}", web::get().to(account_by_id))
        .route(
            "/invoices/{id}/lines",
            web::get().to(|r: HttpRequest, id: web::Path<String>, s: web::Data<Sim>| {
                children(Kind::Invoice, r, id, s)
            }),
        )
        .route(
            "/checkout/sessions/{id}/line_items",
            web::get().to(|r: HttpRequest, id: web::Path<String>, s: web::Data<Sim>| {
                children(Kind::CheckoutSession, r, id, s)
            }),
        )
        .route("/subscription_items", web::get().to(subscription_items));
    let s = resource!(s, Kind::Customer, "/customers");
    let s = resource!(s, Kind::Product, "/products");
    let s = resource!(s, Kind::Price, "/prices");
    let s = resource!(s, Kind::PaymentIntent, "/payment_intents");
    let s = resource!(s, Kind::Charge, "/charges");
    let s = resource!(s, Kind::Refund, "/refunds");
    let s = resource!(s, Kind::Invoice, "/invoices");
    let s = resource!(s, Kind::InvoicePayment, "/invoice_payments");
    let s = resource!(s, Kind::CheckoutSession, "/checkout/sessions");
    let s = resource!(s, Kind::Subscription, "/subscriptions");
    let s = resource!(s, Kind::Event, "/events");
    s.default_service(web::to(unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        let p = parse_params("limit=3&expand[]=data.customer&expand[1]=x&created[gt]=10&created[lte]=20&email=a%40b.c")
            .map_err(|_| "parse")
            .expect("params");
        assert_eq!(p.limit, Some(3));
        assert_eq!(p.expand, ["data.customer", "x"]);
        assert_eq!((p.created.min, p.created.max), (Some(11), Some(20)));
        assert_eq!(p.other, [("email".to_string(), "a@b.c".to_string())]);
        assert!(parse_params("limit=101").is_err());
        assert!(parse_params("limit=0").is_err());
        assert!(parse_params("limit=x").is_err());
        assert!(parse_params("starting_after=a&ending_before=b").is_err());
    }

    #[test]
    fn scanner_finds_top_level_members() {
        let j = r#"{"a":{"id":"x","b":[1,{"c":"}"}]},"id":"cus_1","s":"q\"uote","n":-1.5e3,"t":true,"z":null,"l":["in_1","in_2"]}"#;
        let m = members(j).expect("members");
        let keys: Vec<&str> = m.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["a", "id", "s", "n", "t", "z", "l"]);
        assert_eq!(m[1].1, "\"cus_1\"");
        assert_eq!(m[3].1, "-1.5e3");
        assert_eq!(unquote(m[2].1).as_deref(), Some("q\"uote"));
        let l = members(m[6].1).expect("array");
        assert_eq!(
            l.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            ["\"in_1\"", "\"in_2\""]
        );
        let v: Value = serde_json::from_str(j).expect("valid");
        assert_eq!(v["a"]["b"][1]["c"], "}");
    }

    #[test]
    fn spliced_expansion_equals_tree_expansion() {
        let a = crate::generate::generate_account(
            5,
            0,
            None,
            None,
            crate::Scale::Small,
            1_780_000_000 / 86_400 * 86_400,
        );
        let cases: [(Kind, &[&str]); 5] = [
            (
                Kind::CheckoutSession,
                &["line_items", "customer", "payment_intent"],
            ),
            (Kind::Invoice, &["payments", "customer"]),
            (
                Kind::Subscription,
                &["discounts", "latest_invoice", "customer"],
            ),
            (Kind::Charge, &["payment_intent", "customer"]),
            (Kind::PaymentIntent, &["latest_charge"]),
        ];
        for (kind, fields) in cases {
            for id in a.col(kind).live_ids() {
                let json = a.col(kind).get(&id).map(|e| e.json.clone()).expect("entry");
                let raw: Value = serde_json::from_str(&expand_raw(&a, &json, fields).expect("raw"))
                    .expect("json");
                let mut tree: Value = serde_json::from_str(&json).expect("json");
                let paths: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
                assert!(expand_all(&a, &mut tree, &paths).is_ok());
                assert_eq!(raw, tree, "{kind:?} {id}");
            }
        }
        let any = a.col(Kind::Invoice).live_ids()[0].clone();
        let json = a
            .col(Kind::Invoice)
            .get(&any)
            .map(|e| e.json.clone())
            .expect("entry");
        assert!(expand_raw(&a, &json, &["amount_due"]).is_err());
        assert!(expand_raw(&a, &json, &["line_items"]).is_err());
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("sk_test_abcdefgh1234"), "sk_test_********1234");
        assert_eq!(
            decode_basic("c2tfdGVzdF9hYmM6").as_deref(),
            Some("sk_test_abc")
        );
    }
}
