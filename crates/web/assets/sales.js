// The Sales grid: Stripe customers by email with Spent and Orders, search, sort, paging, and a
// per-email detail drawer (customers, payments, invoices, subscriptions, checkout sessions).
'use strict';

(() => {
  const { api, el, $, money, count, date, businessId } = UI;

  const params = new URLSearchParams(location.search);
  const view = {
    q: params.get('q') || '',
    sort: params.get('sort') || 'total_spent',
    order: params.get('order') || 'desc',
    page: Math.max(1, Number(params.get('page')) || 1),
    perPage: Number(params.get('per_page')) || 25,
    currency: params.get('currency') || '',
  };
  const seenCurrencies = new Set();
  let total = 0;
  let loading = 0;

  function remember() {
    const p = new URLSearchParams();
    if (view.q) p.set('q', view.q);
    if (view.sort !== 'total_spent') p.set('sort', view.sort);
    if (view.order !== 'desc') p.set('order', view.order);
    if (view.page > 1) p.set('page', view.page);
    if (view.perPage !== 25) p.set('per_page', view.perPage);
    if (view.currency) p.set('currency', view.currency);
    const qs = p.toString();
    history.replaceState(history.state, '', location.pathname + (qs ? '?' + qs : ''));
  }

  // The row's totals, the chosen currency (else the largest net) first: the first is the Spent
  // figure, the rest are listed under it.
  function byNet(totals) {
    const rank = (t) => (t.currency === view.currency ? 1 : 0);
    return [...(totals || [])].sort((a, b) => rank(b) - rank(a) || b.net - a.net);
  }

  // The currencies met so far, offered for "Spent in" (sorting by one currency's net).
  function offerCurrencies(items) {
    const before = seenCurrencies.size;
    for (const item of items) for (const t of item.totals || []) seenCurrencies.add(t.currency);
    if (view.currency) seenCurrencies.add(view.currency);
    if (seenCurrencies.size === before && $('currency').options.length > 1) return;
    const select = $('currency');
    select.replaceChildren(select.options[0], ...[...seenCurrencies].sort().map((c) => el('option', { value: c }, c.toUpperCase())));
    select.value = view.currency;
  }

  function spentCell(item) {
    const [first, ...rest] = byNet(item.totals);
    if (!first) return el('td', { class: 'num' }, '—');
    return el('td', { class: 'num' },
      el('span', { class: 'amount' }, money(first.net, first.currency)),
      rest.map((t) => el('span', { class: 'also' }, '+ ' + money(t.net, t.currency))));
  }

  function refundedCell(item) {
    const refunded = byNet(item.totals).filter((t) => t.refunded > 0);
    if (!refunded.length) return el('td', { class: 'num muted' }, '—');
    return el('td', { class: 'num' }, refunded.map((t, i) => el('span', { class: i ? 'also' : '' }, money(t.refunded, t.currency))));
  }

  function row(item) {
    const label = item.name || item.email;
    return el('tr', {},
      el('td', {}, el('div', { class: 'who' },
        el('span', { class: 'name' }, label),
        item.name ? el('span', { class: 'email' }, item.email) : null)),
      spentCell(item),
      el('td', { class: 'num' }, count(item.order_count)),
      refundedCell(item),
      el('td', {}, date(item.last_purchase_at)),
      el('td', { class: 'num' }, el('button', {
        type: 'button', class: 'btn btn-small', 'data-email': item.email,
        'aria-label': 'View details for ' + item.email, onclick: () => openDetail(item.email),
      }, 'Details')));
  }

  function renderSort() {
    for (const th of document.querySelectorAll('#grid th[data-sort]')) {
      if (th.dataset.sort === view.sort) th.setAttribute('aria-sort', view.order === 'asc' ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
  }

  async function load() {
    const ticket = ++loading;
    const qs = new URLSearchParams({
      businessId, page: view.page, per_page: view.perPage, sort: view.sort, order: view.order,
    });
    if (view.q) qs.set('q', view.q);
    if (view.currency) qs.set('currency', view.currency);
    $('grid-status').textContent = 'Loading…';
    renderSort();
    remember();
    let data;
    try {
      data = await api('GET', '/api/contacts/stripe-customers?' + qs);
    } catch (e) {
      if (ticket !== loading) return;
      $('rows').replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'empty' }, 'The customers could not be loaded: ' + e.message)));
      $('grid-status').textContent = '';
      return;
    }
    if (ticket !== loading) return;
    total = data.total;
    offerCurrencies(data.items);
    const pages = Math.max(1, Math.ceil(total / view.perPage));
    if (view.page > pages && total > 0) {
      view.page = pages;
      load();
      return;
    }
    $('rows').replaceChildren(...(data.items.length
      ? data.items.map(row)
      : [el('tr', {}, el('td', { colspan: 6, class: 'empty' }, view.q
        ? 'No customer matches “' + view.q + '”.'
        : 'No Stripe customers yet. Connect Stripe in the settings and run a sync.'))]));
    const first = total ? (view.page - 1) * view.perPage + 1 : 0;
    const last = Math.min(total, view.page * view.perPage);
    $('grid-status').textContent = total
      ? 'Showing ' + count(first) + '–' + count(last) + ' of ' + count(total) + ' customers'
      : '';
    $('page-info').textContent = 'Page ' + view.page + ' of ' + pages;
    $('prev').disabled = view.page <= 1;
    $('next').disabled = view.page >= pages;
  }

  let typing = null;
  $('q').value = view.q;
  $('q').addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => { view.q = $('q').value.trim(); view.page = 1; load(); }, 250);
  });
  $('search-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    clearTimeout(typing);
    view.q = $('q').value.trim();
    view.page = 1;
    load();
  });
  $('currency').addEventListener('change', () => {
    view.currency = $('currency').value;
    view.sort = 'total_spent';
    view.order = 'desc';
    view.page = 1;
    load();
  });
  $('per-page').value = String(view.perPage);
  $('per-page').addEventListener('change', () => { view.perPage = Number($('per-page').value); view.page = 1; load(); });
  $('prev').addEventListener('click', () => { view.page -= 1; load(); });
  $('next').addEventListener('click', () => { view.page += 1; load(); });
  for (const th of document.querySelectorAll('#grid th[data-sort]')) {
    th.querySelector('button').addEventListener('click', () => {
      const key = th.dataset.sort;
      if (view.sort === key) view.order = view.order === 'desc' ? 'asc' : 'desc';
      else { view.sort = key; view.order = key === 'email' ? 'asc' : 'desc'; }
      view.page = 1;
      load();
    });
  }

  // Detail drawer.
  const dialog = $('detail');
  $('detail-close').addEventListener('click', () => dialog.close());
  dialog.addEventListener('click', (ev) => { if (ev.target === dialog) dialog.close(); });

  function pill(status) {
    const tone = { succeeded: 'ok', paid: 'ok', active: 'ok', complete: 'ok', trialing: 'ok', past_due: 'warn', open: 'warn', unpaid: 'err', canceled: 'err', deleted: 'err', void: 'err', uncollectible: 'err', expired: 'err' }[status] || '';
    return el('span', { class: 'pill ' + tone }, String(status || '—').replace(/_/g, ' '));
  }

  function table(caption, headers, rows) {
    return el('section', { 'aria-label': caption },
      el('h3', {}, caption + ' ', el('span', { class: 'muted small' }, '(' + rows.length + ')')),
      rows.length
        ? el('div', { class: 'table-wrap' }, el('table', {},
          el('thead', {}, el('tr', {}, headers.map(([h, cls]) => el('th', { scope: 'col', class: cls || null }, h)))),
          el('tbody', {}, rows)))
        : el('p', { class: 'muted small' }, 'None.'));
  }

  const INTERVAL = { day: 'day', week: 'week', month: 'month', year: 'year' };
  function itemsText(items) {
    return (items || []).map((it) => {
      const every = it.interval ? ' / ' + (it.interval_count > 1 ? it.interval_count + ' ' + INTERVAL[it.interval] + 's' : INTERVAL[it.interval]) : '';
      return (it.quantity > 1 ? it.quantity + ' × ' : '') + money(it.unit_amount, it.currency) + every;
    }).join(', ');
  }

  async function openDetail(email) {
    $('detail-title').textContent = email;
    $('detail-sub').textContent = 'Loading…';
    $('detail-body').replaceChildren();
    if (!dialog.open) dialog.showModal();
    let info;
    try {
      info = await api('GET', '/api/contacts/stripe-info?' + new URLSearchParams({ businessId, email }));
    } catch (e) {
      $('detail-sub').textContent = 'Could not load the details: ' + e.message;
      return;
    }
    const names = [...new Set(info.customers.map((c) => c.name).filter(Boolean))];
    $('detail-title').textContent = names[0] || email;
    $('detail-sub').textContent = (names[0] ? email + ' · ' : '') + count(info.customers.length) + ' Stripe customer record' + (info.customers.length === 1 ? '' : 's');
    const s = info.summary || {};
    const totals = byNet(s.totals);
    const tiles = el('div', { class: 'tiles' },
      el('div', { class: 'tile' }, el('div', { class: 'label' }, 'Spent (net)'),
        el('div', { class: 'value' }, totals[0] ? money(totals[0].net, totals[0].currency) : '—'),
        totals.slice(1).map((t) => el('div', { class: 'sub' }, '+ ' + money(t.net, t.currency)))),
      el('div', { class: 'tile' }, el('div', { class: 'label' }, 'Orders'), el('div', { class: 'value' }, count(s.order_count))),
      el('div', { class: 'tile' }, el('div', { class: 'label' }, 'Refunded'),
        el('div', { class: 'value' }, totals[0] ? money(totals.reduce((n, t) => (t.currency === totals[0].currency ? n + t.refunded : n), 0), totals[0].currency) : '—')),
      el('div', { class: 'tile' }, el('div', { class: 'label' }, 'Last purchase'), el('div', { class: 'value small' }, date(s.last_purchase_at))));

    const payments = info.payments.map((p) => el('tr', {},
      el('td', {}, date(p.created)),
      el('td', { class: 'num' }, money(p.amount, p.currency)),
      el('td', { class: 'num' }, p.refunded ? money(p.refunded, p.currency) : '—'),
      el('td', {}, pill(p.refunded && p.refunded >= p.amount ? 'refunded' : p.status)),
      el('td', {}, el('code', {}, p.id))));
    const subscriptions = info.subscriptions.map((x) => el('tr', {},
      el('td', {}, pill(x.status)),
      el('td', {}, itemsText(x.items) || '—'),
      el('td', { class: 'num' }, money(x.mrr, x.currency)),
      el('td', {}, date(x.start_date || x.created)),
      el('td', {}, x.ended_at ? 'ended ' + date(x.ended_at) : x.cancel_at_period_end ? 'cancels ' + date(x.current_period_end) : 'renews ' + date(x.current_period_end))));
    const invoices = info.invoices.map((i) => el('tr', {},
      el('td', {}, date(i.created)),
      el('td', {}, i.number || el('code', {}, i.id)),
      el('td', { class: 'num' }, money(i.amount, i.currency)),
      el('td', {}, pill(i.status))));
    const sessions = info.checkout_sessions.map((c) => el('tr', {},
      el('td', {}, date(c.created)),
      el('td', {}, c.mode || '—'),
      el('td', { class: 'num' }, money(c.amount, c.currency)),
      el('td', {}, pill(c.payment_status === 'paid' ? 'paid' : c.status))));
    const customers = info.customers.map((c) => el('tr', {},
      el('td', {}, el('code', {}, c.id)),
      el('td', {}, c.name || '—'),
      el('td', {}, date(c.created)),
      el('td', {}, pill(c.status))));

    $('detail-body').replaceChildren(tiles,
      table('Payments', [['Date'], ['Amount', 'num'], ['Refunded', 'num'], ['Status'], ['ID']], payments),
      table('Subscriptions', [['Status'], ['Plan'], ['MRR', 'num'], ['Started'], ['Period']], subscriptions),
      table('Invoices', [['Date'], ['Number'], ['Total', 'num'], ['Status']], invoices),
      table('Checkout sessions', [['Date'], ['Mode'], ['Total', 'num'], ['Status']], sessions),
      table('Stripe customers', [['ID'], ['Name'], ['Created'], ['Status']], customers));
  }

  load();
})();
