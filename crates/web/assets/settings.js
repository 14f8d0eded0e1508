// The Stripe settings panel: status, Connect, Sync now with live progress, Disconnect and the
// write-only webhook secret. Also the OAuth return page when it has no business to go back to.
'use strict';

(() => {
  const { api, el, $, date, ago, duration, count, businessId } = UI;

  // The outcome the OAuth callback appends (?stripe=connected | error&reason=…), in words.
  const OUTCOMES = {
    connected: ['ok', 'Stripe is connected.', 'The first sync has started. A large account can take a few minutes; you can leave this page.'],
    stripe_denied: ['warn', 'Connection cancelled.', 'The connection was declined on Stripe\'s page, so nothing changed. Press Connect to try again.'],
    stripe_state_invalid: ['err', 'That connection link expired.', 'Connect links are valid for 10 minutes and work once. Press Connect to start again.'],
    stripe_exchange_failed: ['err', 'Stripe did not confirm the connection.', 'Stripe refused the authorisation or did not answer. Please try again in a moment.'],
    stripe_account_taken: ['err', 'That Stripe account is already in use.', 'It is connected to another business. Choose a different account, or disconnect it from the other business first.'],
    internal_error: ['err', 'Something went wrong on our side.', 'The connection could not be saved. Please try again.'],
  };

  function showOutcome() {
    const params = new URLSearchParams(location.search);
    const stripe = params.get('stripe');
    if (!stripe) return;
    const key = stripe === 'connected' ? 'connected' : (params.get('reason') || 'internal_error');
    const [tone, title, text] = OUTCOMES[key] || ['err', 'Stripe could not be connected.', 'Reason: ' + key + '. Please try again.'];
    const box = $('outcome');
    box.className = 'notice notice-' + tone;
    box.replaceChildren(el('strong', {}, title), el('span', {}, text));
    box.hidden = false;
    // A reload should not announce the outcome again.
    params.delete('stripe');
    params.delete('reason');
    const rest = params.toString();
    history.replaceState(history.state, '', location.pathname + (rest ? '?' + rest : ''));
  }

  if (document.body.dataset.page === 'return') {
    const target = sessionStorage.getItem(UI.BUSINESS_KEY);
    if (target) {
      location.replace('/ui/businesses/' + encodeURIComponent(target) + '/settings/stripe' + location.search);
    } else {
      showOutcome();
      $('return-text').textContent = 'Open the Stripe settings of your business again from your app.';
    }
    return;
  }

  const RESOURCES = {
    account: 'Account',
    products: 'Products',
    prices: 'Prices',
    customers: 'Customers',
    payment_intents: 'Payments',
    charges: 'Charges',
    refunds: 'Refunds',
    invoices: 'Invoices',
    invoice_payments: 'Invoice payments',
    checkout_sessions: 'Checkout sessions',
    subscriptions: 'Subscriptions',
    events: 'Changes (events)',
  };
  // Listed before they start; the others (account, events) appear when a sync reports them.
  const EXPECTED = ['products', 'prices', 'customers', 'payment_intents', 'charges', 'refunds', 'invoices',
    'invoice_payments', 'checkout_sessions', 'subscriptions'];
  const TRIGGERS = { manual: 'Manual sync', scheduled: 'Scheduled sync', backfill: 'First sync', webhook: 'Webhook refresh' };
  const base = '/api/stripe/' + encodeURIComponent(businessId);

  let status = null;
  let polling = null;

  function badge(text, tone) {
    const b = $('status-badge');
    b.textContent = text;
    b.className = 'badge' + (tone ? ' badge-' + tone : '');
  }

  function isActive(job) {
    return job && (job.status === 'queued' || job.status === 'running');
  }

  function objectsOf(job) {
    return Object.values(job.progress || {}).reduce((n, p) => n + (p.written || 0), 0);
  }

  function render() {
    const s = status;
    const connected = s.status === 'connected';
    const revoked = s.status === 'revoked';
    if (connected) badge('Connected · ' + (s.account_name || s.account_id), 'ok');
    else if (revoked) badge('Reconnect needed', 'warn');
    else badge('Not connected', null);

    $('account').hidden = !(connected || revoked);
    $('account-name').textContent = s.account_name || '—';
    $('account-id').textContent = s.account_id || '';
    $('connected-at').textContent = s.connected_at ? date(s.connected_at, true) : '—';
    if (revoked && $('outcome').hidden) {
      const box = $('outcome');
      box.className = 'notice notice-warn';
      box.replaceChildren(el('strong', {}, 'Stripe access was revoked.'),
        el('span', {}, 'The account owner removed Tributary\'s access in Stripe, so syncing stopped. Reconnect to resume.'));
      box.hidden = false;
    }

    const connect = $('connect');
    connect.hidden = connected;
    connect.textContent = revoked ? 'Reconnect Stripe' : 'Connect with Stripe';
    $('sync').hidden = !connected;
    $('disconnect').hidden = !(connected || revoked);
    $('sync').disabled = isActive(s.last_sync);
    $('confirm-account').textContent = s.account_name || s.account_id || 'this account';

    $('sync-card').hidden = !(connected || revoked) && !s.last_sync;
    renderJob(s.last_sync);
  }

  function renderLast(job) {
    const line = $('last-sync');
    if (!job) {
      line.replaceChildren(el('span', { class: 'muted' }, 'No sync has run yet.'));
      return;
    }
    const what = TRIGGERS[job.trigger] || 'Sync';
    if (isActive(job)) {
      line.replaceChildren(el('span', { class: 'badge badge-run' }, job.status === 'queued' ? 'Queued' : 'Syncing'), ' ',
        el('span', { class: 'muted' }, what + ' started ' + ago(job.started_at || job.created_at)));
      return;
    }
    if (job.status === 'succeeded') {
      line.replaceChildren(el('span', { class: 'badge badge-ok' }, 'Last sync succeeded'), ' ',
        el('span', { class: 'muted' }, what + ' · ' + date(job.finished_at, true) + ' (' + ago(job.finished_at) + ') · '
          + (objectsOf(job) ? count(objectsOf(job)) + ' objects written' : 'already up to date')
          + ' · took ' + duration(job.started_at, job.finished_at)));
      return;
    }
    const message = job.error ? job.error.message : 'The sync did not finish.';
    line.replaceChildren(el('span', { class: 'badge badge-err' }, 'Last sync failed'), ' ',
      el('span', {}, what + ' · ' + date(job.finished_at || job.created_at, true) + ': ' + message));
  }

  function renderJob(job) {
    renderLast(job);
    const box = $('progress');
    if (!job || !isActive(job)) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    const entries = Object.entries(job.progress || {});
    const names = [...new Set([...EXPECTED, ...entries.map(([k]) => k)])];
    const done = names.filter((k) => job.progress?.[k]?.done).length;
    $('overall-bar').style.width = Math.round((100 * done) / names.length) + '%';
    $('resources').replaceChildren(...names.map((k) => {
      const p = (job.progress || {})[k];
      const state = p ? (p.done ? 'done' : 'running') : 'waiting';
      return el('li', { 'data-resource': k },
        el('span', { class: 'state ' + state, 'aria-hidden': 'true' }),
        el('span', { class: 'name' }, RESOURCES[k] || k.replace(/_/g, ' ')),
        el('span', { class: 'count' }, p ? count(p.written) : '—'),
        el('span', { class: 'visually-hidden' }, state === 'done' ? 'done' : state === 'running' ? 'in progress' : 'waiting'));
    }));
    $('progress-live').textContent = 'Syncing: ' + done + ' of ' + names.length + ' resources done, '
      + count(objectsOf(job)) + ' objects so far.';
  }

  async function load() {
    try {
      status = await api('GET', base + '/status');
      render();
      if (isActive(status.last_sync)) watch(status.last_sync.id);
    } catch (e) {
      badge('Unavailable', 'err');
      const box = $('outcome');
      box.className = 'notice notice-err';
      box.replaceChildren(el('strong', {}, 'The settings could not be loaded.'), el('span', {}, e.message));
      box.hidden = false;
    }
  }

  function watch(jobId) {
    if (polling) clearTimeout(polling);
    const tick = async () => {
      try {
        const job = await api('GET', base + '/sync-jobs/' + encodeURIComponent(jobId));
        status.last_sync = job;
        $('sync').disabled = isActive(job);
        renderJob(job);
        if (isActive(job)) {
          polling = setTimeout(tick, 700);
        } else {
          polling = null;
          $('progress-live').textContent = job.status === 'succeeded'
            ? 'Sync finished: ' + count(objectsOf(job)) + ' objects.'
            : 'Sync failed: ' + (job.error ? job.error.message : 'unknown error') + '.';
          await load();
        }
      } catch (e) {
        polling = setTimeout(tick, 2000);
      }
    };
    tick();
  }

  $('connect').addEventListener('click', async (ev) => {
    const button = ev.currentTarget;
    button.disabled = true;
    try {
      const { url } = await api('GET', '/api/stripe/connect-url?businessId=' + encodeURIComponent(businessId));
      location.assign(url);
    } catch (e) {
      button.disabled = false;
      const box = $('outcome');
      box.className = 'notice notice-err';
      box.replaceChildren(el('strong', {}, 'Could not start connecting.'), el('span', {}, e.message));
      box.hidden = false;
    }
  });

  $('sync').addEventListener('click', async () => {
    $('sync').disabled = true;
    try {
      const job = await api('POST', base + '/sync');
      status.last_sync = job;
      $('sync-card').hidden = false;
      renderJob(job);
      watch(job.id);
    } catch (e) {
      $('sync').disabled = false;
      $('last-sync').replaceChildren(el('span', { class: 'badge badge-err' }, 'Sync not started'), ' ', el('span', {}, e.message));
    }
  });

  const dialog = $('confirm-disconnect');
  $('disconnect').addEventListener('click', () => dialog.showModal());
  dialog.addEventListener('close', async () => {
    if (dialog.returnValue !== 'confirm') return;
    dialog.returnValue = '';
    const button = $('disconnect');
    button.disabled = true;
    try {
      const res = await api('DELETE', base);
      const box = $('outcome');
      const revokeFailed = res.headers && res.headers.get('Tributary-Revoke') === 'failed';
      box.className = 'notice ' + (revokeFailed ? 'notice-warn' : 'notice-ok');
      box.replaceChildren(el('strong', {}, 'Stripe disconnected.'),
        el('span', {}, revokeFailed
          ? 'The copied data was deleted, but Stripe did not confirm the revocation; remove the app in your Stripe dashboard too.'
          : 'Access was revoked and the copied data deleted.'));
      box.hidden = false;
      if (polling) clearTimeout(polling);
      await load();
      $('connect').focus();
    } catch (e) {
      const box = $('outcome');
      box.className = 'notice notice-err';
      box.replaceChildren(el('strong', {}, 'Could not disconnect.'), el('span', {}, e.message));
      box.hidden = false;
    } finally {
      button.disabled = false;
    }
  });

  $('webhook-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('webhook-secret');
    const msg = $('webhook-msg');
    const secret = input.value.trim();
    if (!secret.startsWith('whsec_')) {
      msg.className = 'form-msg err';
      msg.textContent = 'A signing secret starts with whsec_.';
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    try {
      await api('PUT', base + '/webhook-secret', { secret });
      input.value = '';
      input.removeAttribute('aria-invalid');
      msg.className = 'form-msg ok';
      msg.textContent = 'Saved. Events signed with this secret are now accepted.';
    } catch (e) {
      msg.className = 'form-msg err';
      msg.textContent = e.message;
      input.setAttribute('aria-invalid', 'true');
    }
  });

  showOutcome();
  load();
})();
