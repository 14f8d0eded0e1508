// Shared by every Tributary page: the token, the JSON API, formatting and small DOM helpers.
// The token arrives in the URL fragment (never sent to a server), is kept in sessionStorage
// for this tab only, and is removed from the address bar at once.
'use strict';

const UI = (() => {
  const TOKEN_KEY = 'tributary.token';
  const BUSINESS_KEY = 'tributary.business';

  function takeToken() {
    const match = location.hash.match(/(?:^#|&)token=([^&]+)/);
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      history.replaceState(history.state, '', location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  const token = takeToken();
  const pathMatch = location.pathname.match(/^\/ui\/businesses\/([^/]+)\//);
  const businessId = pathMatch ? decodeURIComponent(pathMatch[1]) : null;
  if (businessId) sessionStorage.setItem(BUSINESS_KEY, businessId);

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function sessionProblem(text) {
    const box = document.getElementById('session-problem');
    if (!box) return;
    box.textContent = text;
    box.hidden = false;
  }

  // Calls the JSON API; resolves to the parsed body (or { status, headers } for 204) and
  // rejects with an ApiError carrying the API's error code and message.
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch (e) {
      throw new ApiError(0, 'network', 'The server could not be reached. Check your connection and try again.');
    }
    if (res.status === 204) return { status: 204, headers: res.headers };
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) {
      const err = (data && data.error) || {};
      if (res.status === 401) {
        sessionProblem(token
          ? 'Your session has expired. Open this page again from your app to continue.'
          : 'This page needs a sign-in token. Open it from your app (the link carries #token=…).');
      }
      throw new ApiError(res.status, err.code || 'http_' + res.status, err.message || res.statusText);
    }
    return data;
  }

  // Stripe's zero-decimal and three-decimal currencies; every other currency has two.
  const ZERO = new Set(['bif', 'clp', 'djf', 'gnf', 'jpy', 'kmf', 'krw', 'mga', 'pyg', 'rwf', 'ugx', 'vnd', 'vuv', 'xaf', 'xof', 'xpf']);
  const THREE = new Set(['bhd', 'jod', 'kwd', 'omr', 'tnd']);
  function exponent(currency) {
    const c = String(currency || '').toLowerCase();
    return ZERO.has(c) ? 0 : THREE.has(c) ? 3 : 2;
  }

  // Minor units → "$1,234.50". `compact` gives "$12.3K" for axes and tiles.
  function money(minor, currency, { compact = false } = {}) {
    if (minor === null || minor === undefined || !currency) return '—';
    const digits = exponent(currency);
    const value = minor / 10 ** digits;
    try {
      return new Intl.NumberFormat(undefined, {
        style: 'currency',
        currency: currency.toUpperCase(),
        notation: compact ? 'compact' : 'standard',
        minimumFractionDigits: compact ? 0 : digits,
        maximumFractionDigits: compact ? 1 : digits,
      }).format(value);
    } catch (e) {
      return value.toFixed(digits) + ' ' + currency.toUpperCase();
    }
  }

  const numberFormat = new Intl.NumberFormat();
  const count = (n) => (n === null || n === undefined ? '—' : numberFormat.format(n));
  const percent = (f, digits = 1) => (f === null || f === undefined || Number.isNaN(f)
    ? '—'
    : new Intl.NumberFormat(undefined, { style: 'percent', maximumFractionDigits: digits, minimumFractionDigits: 0 }).format(f));

  function date(iso, withTime = false) {
    if (!iso) return '—';
    const d = new Date(iso);
    return withTime
      ? d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })
      : d.toLocaleDateString(undefined, { dateStyle: 'medium' });
  }

  function ago(iso) {
    if (!iso) return '';
    const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
    if (Math.abs(s) < 45) return 'just now';
    if (Math.abs(s) < 3600) return rtf.format(-Math.round(s / 60), 'minute');
    if (Math.abs(s) < 86400) return rtf.format(-Math.round(s / 3600), 'hour');
    return rtf.format(-Math.round(s / 86400), 'day');
  }

  function duration(fromIso, toIso) {
    if (!fromIso || !toIso) return '';
    const s = Math.max(0, Math.round((new Date(toIso) - new Date(fromIso)) / 1000));
    return s < 60 ? s + ' s' : Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  }

  // el('td', { class: 'num' }, 'text', child, …): attributes starting with "on" are listeners.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
      else if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const $ = (id) => document.getElementById(id);

  function pageUrl(page) {
    return '/ui/businesses/' + encodeURIComponent(businessId) + '/' + page;
  }

  // The business's display name in the top bar, from its Stripe account (best effort).
  function showBusinessName(name) {
    const slot = $('business-name');
    if (slot) slot.textContent = name || businessId || '';
  }
  if (businessId) document.addEventListener('DOMContentLoaded', () => showBusinessName(businessId));

  return {
    token, businessId, api, ApiError, money, exponent, count, percent, date, ago, duration,
    el, $, pageUrl, showBusinessName, sessionProblem, BUSINESS_KEY,
  };
})();
