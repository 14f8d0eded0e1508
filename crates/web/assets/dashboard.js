// The dashboard: revenue, MRR, churn and new customers over the chosen months, drawn with
// charts.js from the revenue, retention and acquisition series of the JSON API.
'use strict';

(() => {
  const { api, el, $, money, count, percent, businessId } = UI;
  const base = '/api/businesses/' + encodeURIComponent(businessId);

  function ym(d) {
    return d.getUTCFullYear() + '-' + String(d.getUTCMonth() + 1).padStart(2, '0');
  }
  const now = new Date();
  const current = ym(now);
  const yearAgo = ym(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 11, 1)));
  const params = new URLSearchParams(location.search);
  $('from').value = params.get('from') || yearAgo;
  $('to').value = params.get('to') || current;
  $('from').max = current;
  $('to').max = current;

  // The currencies this business is paid in, most common first (from the top customers).
  async function currencies() {
    try {
      const page = await api('GET', '/api/contacts/stripe-customers?' + new URLSearchParams({ businessId, per_page: 100, sort: 'total_spent', order: 'desc' }));
      const seen = new Map();
      for (const item of page.items) {
        for (const t of item.totals || []) seen.set(t.currency, (seen.get(t.currency) || 0) + (t.currency === item.currency ? 2 : 1));
      }
      return [...seen.entries()].sort((a, b) => b[1] - a[1]).map(([c]) => c);
    } catch (e) {
      return [];
    }
  }

  function tile(label, value, sub) {
    return el('div', { class: 'tile' }, el('div', { class: 'label' }, label), el('div', { class: 'value' }, value), sub ? el('div', { class: 'sub' }, sub) : null);
  }

  async function show() {
    const from = $('from').value;
    const to = $('to').value;
    const currency = $('currency').value;
    if (!from || !to || from > to) {
      $('dash-status').className = 'form-msg err';
      $('dash-status').textContent = 'Choose a start month that is not after the end month.';
      return;
    }
    const p = new URLSearchParams({ from, to, currency });
    history.replaceState(history.state, '', location.pathname + '?' + p);
    $('dash-status').className = 'form-msg';
    $('dash-status').textContent = 'Loading…';
    let revenue, retention, acquisition;
    try {
      [revenue, retention, acquisition] = await Promise.all([
        api('GET', base + '/revenue?' + p),
        api('GET', base + '/retention?' + p),
        api('GET', base + '/acquisition?' + p),
      ]);
    } catch (e) {
      $('dash-status').className = 'form-msg err';
      $('dash-status').textContent = 'The dashboard could not be loaded: ' + e.message;
      return;
    }
    $('dash-status').textContent = '';
    const labels = revenue.months.map((m) => m.month);
    const cur = revenue.currency;
    const fmtMoney = (v, axis) => money(v, cur, { compact: axis === true });
    const fmtRate = (v) => percent(v);
    const fmtCount = (v) => count(v);

    const last = revenue.months[revenue.months.length - 1] || {};
    const lastRet = retention.months[retention.months.length - 1] || {};
    const sum = (xs, k) => xs.reduce((n, m) => n + (m[k] || 0), 0);
    $('tiles').replaceChildren(
      tile('MRR', money(last.mrr, cur), 'end of ' + Charts.monthLabel(last.month || to, true)),
      tile('ARR', money(last.arr, cur), count(last.active_subscriptions) + ' active subscriptions'),
      tile('Net revenue', money(sum(revenue.months, 'net'), cur), 'over ' + labels.length + ' months'),
      tile('New customers', count(sum(acquisition.months, 'new_customers')), count(sum(acquisition.months, 'new_subscriptions')) + ' new subscriptions'),
      tile('Subscriber churn', percent(lastRet.subscriber_churn_rate), 'in ' + Charts.monthLabel(lastRet.month || to, true)),
      tile('Net revenue retention', percent(lastRet.net_revenue_retention), 'in ' + Charts.monthLabel(lastRet.month || to, true)));

    Charts.bars($('chart-revenue'), {
      title: 'Revenue', labels, format: fmtMoney,
      series: [
        { name: 'Net revenue', swatch: 'bar', values: revenue.months.map((m) => m.net) },
        { name: 'Refunds', swatch: 'bar-alt', values: revenue.months.map((m) => m.refunded) },
      ],
    });
    Charts.lines($('chart-mrr'), {
      title: 'Monthly recurring revenue', labels, format: fmtMoney, area: true,
      series: [{ name: 'MRR', swatch: 'line', values: revenue.months.map((m) => m.mrr) }],
    });
    Charts.lines($('chart-churn'), {
      title: 'Churn', labels: retention.months.map((m) => m.month), format: fmtRate,
      series: [
        { name: 'Subscriber churn', swatch: 'line', values: retention.months.map((m) => m.subscriber_churn_rate) },
        { name: 'Gross MRR churn', swatch: 'line-alt', values: retention.months.map((m) => m.gross_mrr_churn_rate) },
      ],
    });
    Charts.bars($('chart-new'), {
      title: 'New customers', labels: acquisition.months.map((m) => m.month), format: fmtCount, integer: true,
      series: [
        { name: 'New customers', swatch: 'bar', values: acquisition.months.map((m) => m.new_customers) },
        { name: 'New subscriptions', swatch: 'bar-alt', values: acquisition.months.map((m) => m.new_subscriptions) },
      ],
    });
  }

  $('range').addEventListener('submit', (ev) => { ev.preventDefault(); show(); });
  $('currency').addEventListener('change', show);

  (async () => {
    const found = await currencies();
    const wanted = params.get('currency');
    const list = [...new Set([...(wanted ? [wanted] : []), ...found])];
    if (list.length) {
      $('currency').replaceChildren(...list.map((c) => el('option', { value: c }, c.toUpperCase())));
    }
    show();
  })();
})();
