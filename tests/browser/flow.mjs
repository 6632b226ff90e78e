// The web page's main flow in headless Chromium (Debian's, never a downloaded one):
// sign up, sign in, see persons, a user is refused the admin board, a moderator creates a
// person, sign out. Exits non-zero on the first failed step; leaves a screenshot in artifacts/.
//
// usage: node flow.mjs <gateway-url> <moderator-username> <moderator-password>

import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const [url, moderatorName, moderatorPassword] = process.argv.slice(2);
if (!url || !moderatorName || !moderatorPassword) {
  console.error('usage: node flow.mjs <gateway-url> <moderator-username> <moderator-password>');
  process.exit(2);
}
const artifacts = join(dirname(fileURLToPath(import.meta.url)), 'artifacts');
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const page = await browser.newPage();
page.setDefaultTimeout(15_000);
const pageErrors = [];
page.on('pageerror', (error) => pageErrors.push(String(error)));

let step = 'start';
function check(condition, what) {
  if (!condition) throw new Error(what);
}
async function messageContains(text) {
  await page.locator('#message', { hasText: text }).waitFor({ state: 'visible' });
}
async function signIn(username, password) {
  await page.fill('#sign-in-username', username);
  await page.fill('#sign-in-password', password);
  await page.click('#sign-in-submit');
  await page.locator('#signed-in').waitFor({ state: 'visible' });
  await page.locator('#session-user', { hasText: username }).waitFor();
}
async function signOut() {
  await page.click('#sign-out');
  await page.locator('#signed-out').waitFor({ state: 'visible' });
  await messageContains('Signed out');
  const stored = await page.evaluate(() => sessionStorage.length);
  check(stored === 0, 'the token is still in sessionStorage after sign-out');
}

try {
  step = 'open the page';
  await page.goto(url);
  await page.locator('#sign-up-form').waitFor();

  step = 'sign up';
  const username = 'browser' + Date.now().toString(36);
  const password = 'correct horse battery staple';
  await page.fill('#sign-up-username', username);
  await page.fill('#sign-up-email', username + '@example.com');
  await page.fill('#sign-up-password', password);
  await page.click('#sign-up-submit');
  await messageContains('registered successfully');

  step = 'a wrong password gets a clear message';
  await page.fill('#sign-in-username', username);
  await page.fill('#sign-in-password', 'not the password');
  await page.click('#sign-in-submit');
  await page.locator('#message.error').waitFor({ state: 'visible' });
  check(await page.locator('#signed-in').isHidden(), 'signed in with a wrong password');

  step = 'sign in';
  await signIn(username, password);
  const cookies = await page.context().cookies();
  check(cookies.length === 0, 'the page set a cookie: ' + JSON.stringify(cookies));

  step = 'see persons';
  await page.locator('#persons-body tr').first().waitFor();
  check(await page.locator('#persons-body tr').count() > 0, 'no persons listed');
  check(await page.locator('#person-form').isHidden(), 'a plain user is offered the create form');

  step = 'the user board opens';
  await page.click('#tab-boards');
  await page.click('#board-user');
  await page.locator('#board-output', { hasText: 'User Content.' }).waitFor();

  step = 'a user is refused the admin board';
  await page.click('#board-admin');
  await messageContains('permission');
  check(!(await page.textContent('#board-output')).includes('Admin Content'), 'admin content shown to a user');

  step = 'sign out the user';
  await signOut();

  step = 'a moderator creates a person';
  await signIn(moderatorName, moderatorPassword);
  await page.locator('#person-form').waitFor({ state: 'visible' });
  const personName = 'Ada ' + Date.now().toString(36);
  await page.fill('#person-name', personName);
  await page.fill('#person-email', 'ada.' + Date.now().toString(36) + '@example.com');
  await page.fill('#person-age', '36');
  await page.click('#person-submit');
  await messageContains('Created ' + personName);
  await page.fill('#filter-name', personName);
  await page.press('#filter-name', 'Enter');
  await page.locator('#persons-body tr', { hasText: personName }).waitFor();

  step = 'the moderator board opens for a moderator';
  await page.click('#tab-boards');
  await page.click('#board-mod');
  await page.locator('#board-output', { hasText: 'Moderator Content.' }).waitFor();
  await page.click('#tab-persons');
  await page.locator('#persons-body tr', { hasText: personName }).waitFor();
  await page.screenshot({ path: join(artifacts, 'flow.png'), fullPage: true });

  step = 'sign out the moderator';
  await signOut();

  check(pageErrors.length === 0, 'script errors on the page: ' + pageErrors.join('; '));
  console.log('browser flow passed');
} catch (error) {
  console.error(`browser flow failed at step "${step}": ${error.message}`);
  await page.screenshot({ path: join(artifacts, 'failure.png'), fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
