// The demo's pages in Debian's chromium, driven by playwright-core (no downloaded browser).
// Usage: node flow.mjs <base url> <token> <screenshot dir> <business to connect> <account name> [<synced business>]
// Connects the business through the simulator's approval page, runs a manual sync and watches
// it finish, opens the sales grid and a customer's detail, the dashboard, and disconnects.
// A screenshot of each step goes to the screenshot dir; any failed expectation exits non-zero.
import { chromium } from 'playwright-core';
import { mkdirSync, readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';

const [base, token, shots, business, accountName, synced] = process.argv.slice(2);
// The simulator's control routes (optional): used to slow Stripe down during the manual sync.
const sim = process.env.SIM_URL;
async function simFaults(body) {
  const res = await fetch(sim + '/_sim/faults', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error('simulator faults: HTTP ' + res.status);
}
if (!base || !token || !shots || !business || !accountName) {
  console.error('usage: node flow.mjs <base> <token> <dir> <business> <account name> [<synced business>]');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
// Screenshots of an earlier run would mix with this one's.
for (const f of readdirSync(shots)) if (/^\d\d-[a-z-]+\.png$/.test(f)) unlinkSync(join(shots, f));
// launch() gives chromium a fresh, empty profile directory of its own (--user-data-dir).
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage',
  ],
});
const started = Date.now();
let n = 0;
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, locale: 'en-US', timezoneId: 'UTC' });
  context.setDefaultTimeout(30_000);
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push('console: ' + m.text());
  });
  // The simulator's approval page is not ours; every other answer must be a success.
  page.on('response', (r) => {
    if (r.status() >= 400 && r.url().startsWith(base)) problems.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
  });

  async function shot(name, fullPage = true) {
    n += 1;
    const file = join(shots, String(n).padStart(2, '0') + '-' + name + '.png');
    await page.screenshot({ path: file, fullPage });
    console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${file}`);
  }
  async function step(what, fn) {
    console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${what}`);
    await fn();
  }
  const badge = page.locator('#status-badge');
  const expectText = async (locator, re) => {
    await locator.filter({ hasText: re }).first().waitFor();
  };

  await step('settings page of the not-connected business', async () => {
    await page.goto(`${base}/ui/businesses/${business}/settings/stripe#token=${token}`);
    await expectText(badge, /^Not connected$/);
    if (page.url().includes('token=')) throw new Error('the token stayed in the address bar');
    await shot('settings-not-connected');
  });

  await step('connect through the simulator approval page', async () => {
    await page.getByRole('button', { name: 'Connect with Stripe' }).click();
    await page.waitForURL(/\/oauth\/authorize/);
    await shot('stripe-approval-page');
    await page.locator('a.approve', { hasText: accountName }).click();
    await page.waitForURL(new RegExp(`/ui/businesses/${business}/settings/stripe`));
    await expectText(badge, /^Connected · /);
    await expectText(page.locator('#outcome'), /Stripe is connected/);
    await shot('connected');
  });

  await step('manual sync with live progress', async () => {
    const sync = page.getByRole('button', { name: 'Sync now' });
    await sync.waitFor();
    // The first sync starts on connect; Sync now is enabled again once it has finished.
    await page.waitForFunction(() => !document.getElementById('sync').disabled, null, { timeout: 60_000 });
    // Slow the simulator down so the sync lasts long enough to watch its progress.
    if (sim) await simFaults({ latency_ms: 400 });
    await sync.click();
    await page.locator('#resources li').first().waitFor();
    await expectText(page.locator('#progress-live'), /Syncing: \d+ of \d+ resources done/);
    await page.locator('#progress').waitFor();
    await shot('sync-progress');
    await expectText(page.locator('#last-sync'), /Last sync succeeded.*Manual sync/);
    if (sim) await simFaults({});
    await shot('sync-finished');
  });

  await step('write-only webhook secret', async () => {
    await page.getByLabel('Signing secret', { exact: true }).fill('whsec_browser_test_0123456789');
    await page.getByRole('button', { name: 'Save secret' }).click();
    await expectText(page.locator('#webhook-msg'), /^Saved\./);
    if ((await page.getByLabel('Signing secret', { exact: true }).inputValue()) !== '') throw new Error('the secret stayed in the field');
  });

  await step('sales grid with Spent and Orders', async () => {
    await page.getByRole('navigation', { name: 'Business pages' }).getByRole('link', { name: 'Sales' }).click();
    await page.waitForURL(/\/sales/);
    for (const name of ['Spent', 'Orders']) await page.getByRole('columnheader', { name }).waitFor();
    await page.locator('#rows tr .amount').first().waitFor();
    const firstSpent = await page.locator('#rows tr .amount').first().textContent();
    if (!/\d/.test(firstSpent)) throw new Error('no amount in the Spent column: ' + firstSpent);
    await expectText(page.locator('#grid-status'), /Showing 1–/);
    await shot('sales-grid');
  });

  await step('search, sort and a customer detail', async () => {
    await page.locator('#grid thead th[data-sort="email"] button').click();
    await page.locator('#grid thead th[data-sort="email"][aria-sort="ascending"]').waitFor();
    await page.locator('#grid thead th[data-sort="total_spent"] button').click();
    await page.locator('#grid thead th[data-sort="total_spent"][aria-sort="descending"]').waitFor();
    // Rank by one currency's net: the first row's Spent is then in that currency.
    const currency = await page.locator('#currency option').nth(1).getAttribute('value');
    await page.selectOption('#currency', currency);
    await page.waitForURL(new RegExp(`currency=${currency}`));
    await expectText(page.locator('#grid-status'), /Showing 1–/);
    await page.selectOption('#currency', '');
    await expectText(page.locator('#grid-status'), /Showing 1–/);
    const email = await page.locator('#rows button[data-email]').first().getAttribute('data-email');
    await page.locator('#q').fill(email.split('@')[0]);
    await expectText(page.locator('#grid-status'), /Showing 1–/);
    await page.locator(`#rows button[data-email="${email}"]`).click();
    const drawer = page.locator('dialog#detail');
    await drawer.waitFor();
    await expectText(drawer.locator('h3'), /Payments/);
    await shot('customer-detail', false);
    await page.keyboard.press('Escape');
    await drawer.waitFor({ state: 'hidden' });
  });

  await step('dashboard charts', async () => {
    await page.getByRole('navigation', { name: 'Business pages' }).getByRole('link', { name: 'Dashboard' }).click();
    await page.waitForURL(/\/dashboard/);
    for (const id of ['chart-revenue', 'chart-mrr', 'chart-churn', 'chart-new']) await page.locator(`#${id} svg`).waitFor();
    await expectText(page.locator('#tiles .label'), /MRR/);
    await shot('dashboard');
  });

  await step('reconnect needed, then disconnect with a confirmation', async () => {
    await page.getByRole('navigation', { name: 'Business pages' }).getByRole('link', { name: 'Stripe settings' }).click();
    await expectText(badge, /^Connected · /);
    if (sim) {
      // The account owner revokes access in Stripe: the deauthorization webhook arrives and the
      // badge asks to reconnect.
      const account = (await page.locator('#account-id').textContent()).trim();
      const res = await fetch(`${sim}/_sim/accounts/${account}/revoke`, { method: 'POST' });
      if (!res.ok) throw new Error('revoke: HTTP ' + res.status);
      for (let i = 0; i < 60; i += 1) {
        await page.reload();
        await page.waitForFunction(() => document.getElementById('status-badge').textContent !== 'Checking…');
        if ((await badge.textContent()) === 'Reconnect needed') break;
        await page.waitForTimeout(250);
      }
      await expectText(badge, /^Reconnect needed$/);
      await page.getByRole('button', { name: 'Reconnect Stripe' }).waitFor();
      await shot('reconnect-needed');
    }
    await page.getByRole('button', { name: 'Disconnect' }).click();
    const dialog = page.locator('dialog#confirm-disconnect');
    await dialog.waitFor();
    await shot('disconnect-confirm', false);
    await dialog.getByRole('button', { name: 'Disconnect' }).click();
    await expectText(badge, /^Not connected$/);
    await expectText(page.locator('#outcome'), /Stripe disconnected/);
    await shot('disconnected');
  });

  if (synced) {
    await step('the synced business (README pictures)', async () => {
      await page.goto(`${base}/ui/businesses/${synced}/settings/stripe`);
      await expectText(badge, /^Connected · /);
      await expectText(page.locator('#last-sync'), /Last sync succeeded/);
      await shot('synced-settings', false);
      await page.goto(`${base}/ui/businesses/${synced}/sales`);
      await page.locator('#rows tr .amount').first().waitFor();
      await shot('synced-sales', false);
      await page.goto(`${base}/ui/businesses/${synced}/dashboard`);
      await page.locator('#chart-mrr svg').waitFor();
      await shot('synced-dashboard', false);
    });
  }

  if (problems.length) throw new Error('the pages reported errors:\n' + problems.join('\n'));
  console.log(`browser flow passed in ${((Date.now() - started) / 1000).toFixed(1)}s`);
} catch (e) {
  failed = true;
  console.error('browser flow FAILED: ' + (e && e.stack ? e.stack : e));
} finally {
  if (sim) await simFaults({}).catch(() => {});
  await browser.close();
}
process.exit(failed ? 1 : 0);
