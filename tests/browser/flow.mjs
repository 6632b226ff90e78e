// The web page's main flow in headless Chromium (Debian's, never a downloaded one):
// sign up, sign in (the refresh token only in an HttpOnly cookie, the access token in memory
// only), the page renews the short-lived access token through the cookie before it expires, a
// reload keeps the user signed in through the cookie, the profile lists the sessions and
// changes the password, a user is refused the admin board, sign-out ends the session at the
// server (a reload stays signed out), a moderator creates a person, an admin disables and
// enables an account, ends its sessions and changes its roles, and creates a service account
// (its secret shown once, and working at the token endpoint), sees it listed, disables, rotates
// and deletes it, and a tab whose renewal finds another account signed in (in another tab) takes
// that account over. Exits non-zero on the first failed step; leaves screenshots in artifacts/.
//
// usage: node flow.mjs <gateway-url> <moderator-username> <moderator-password> <admin-username> <admin-password>

import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const [url, moderatorName, moderatorPassword, adminName, adminPassword] = process.argv.slice(2);
if (!url || !moderatorName || !moderatorPassword || !adminName || !adminPassword) {
  console.error('usage: node flow.mjs <gateway-url> <moderator-username> <moderator-password> <admin-username> <admin-password>');
  process.exit(2);
}
const artifacts = join(dirname(fileURLToPath(import.meta.url)), 'artifacts');
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
// A context of its own, so a second tab can share the page's cookie.
const page = await (await browser.newContext()).newPage();
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
  const stored = await page.evaluate(() => sessionStorage.length + localStorage.length);
  check(stored === 0, 'something is still in web storage after sign-out');
  const cookies = await page.context().cookies();
  check(cookies.length === 0, 'the refresh cookie outlived sign-out: ' + JSON.stringify(cookies));
}
// The one cookie the page has while signed in: the refresh token, out of scripts' reach.
async function refreshCookie() {
  const cookies = await page.context().cookies();
  check(cookies.length === 1, 'expected exactly the refresh cookie: ' + JSON.stringify(cookies.map((c) => c.name)));
  const [cookie] = cookies;
  check(cookie.name === 'refresh_token', 'unexpected cookie ' + cookie.name);
  check(cookie.httpOnly, 'the refresh cookie is readable by scripts');
  check(cookie.sameSite === 'Strict', 'the refresh cookie is SameSite=' + cookie.sameSite);
  check(cookie.path === '/api/auth', 'the refresh cookie has path ' + cookie.path);
  const visible = await page.evaluate(() => document.cookie);
  check(visible === '', 'a script sees cookies: ' + visible);
  return cookie.value;
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
  const firstCookie = await refreshCookie();
  const stored = await page.evaluate(() => sessionStorage.length + localStorage.length);
  check(stored === 0, 'the page put something in web storage');

  step = 'the page renews the access token through the cookie before it expires';
  // The test's access tokens live 10 s; the page renews 5 s after sign-in, without a reload.
  const renewedBy = Date.now() + 20_000;
  while (await refreshCookie() === firstCookie) {
    check(Date.now() < renewedBy, 'the cookie was not spent to renew the access token');
    await page.waitForTimeout(500);
  }
  await page.waitForTimeout(6_000);
  await page.click('#tab-boards');
  await page.click('#board-user');
  await page.locator('#board-output', { hasText: 'User Content.' }).waitFor();
  await page.click('#tab-persons');

  step = 'a reload keeps the user signed in through the cookie';
  const beforeReload = await refreshCookie();
  await page.reload();
  await page.locator('#signed-in').waitFor({ state: 'visible' });
  await page.locator('#session-user', { hasText: username }).waitFor();
  await page.locator('#persons-body tr').first().waitFor();
  check(await refreshCookie() !== beforeReload, 'the refresh cookie was not rotated');

  step = 'the profile lists the sessions, this one marked';
  await page.click('#tab-profile');
  await page.locator('#sessions-body tr.current').waitFor();
  check(await page.locator('#sessions-body tr.current').count() === 1, 'not exactly one current session');
  await page.screenshot({ path: join(artifacts, 'profile.png'), fullPage: true });

  step = 'a wrong current password is refused without signing out';
  const newPassword = 'another correct horse battery';
  await page.fill('#password-current', 'not the password');
  await page.fill('#password-new', newPassword);
  await page.click('#password-submit');
  await messageContains('not correct');
  check(await page.locator('#signed-in').isVisible(), 'a wrong current password signed the user out');

  step = 'change the password';
  await page.fill('#password-current', password);
  await page.fill('#password-new', newPassword);
  await page.click('#password-submit');
  await messageContains('Password changed');
  await page.click('#tab-persons');

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

  step = 'sign out the user, for real';
  await signOut();
  await page.reload({ waitUntil: 'networkidle' });
  await page.locator('#sign-in-form').waitFor();
  check(await page.locator('#signed-in').isHidden(), 'a reload after sign-out signed the user back in');

  step = 'the new password signs in';
  await signIn(username, newPassword);
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

  step = 'after a refresh, a tab takes over the account another tab signed in';
  // The tabs share the refresh cookie: once another tab signs a different account in, this
  // tab's next renewal gets that account's token, and the tab must show that account.
  const other = await page.context().newPage();
  await other.goto(url);
  await other.locator('#session-user', { hasText: moderatorName }).waitFor();
  await other.click('#sign-out');
  await other.locator('#signed-out').waitFor({ state: 'visible' });
  await other.fill('#sign-in-username', username);
  await other.fill('#sign-in-password', newPassword);
  await other.click('#sign-in-submit');
  await other.locator('#session-user', { hasText: username }).waitFor();
  check(await page.locator('#session-user').innerText() !== await other.locator('#session-user').innerText(),
    'the first tab already showed the other account');
  await page.evaluate(() => refreshSession()); // what the renewal timer does
  await page.locator('#session-user', { hasText: username }).waitFor({ timeout: 5_000 });
  check(await page.locator('#person-form').isHidden(), 'the tab still offers a moderator\'s form to a user');
  await other.close();

  step = 'sign out (the account the tab took over)';
  await signOut();

  step = 'an admin disables and enables an account and ends its sessions';
  await signIn(adminName, adminPassword);
  await page.locator('#tab-admin').waitFor({ state: 'visible' });
  await page.click('#tab-admin');
  const row = page.locator('#users-body tr', { has: page.locator('td', { hasText: moderatorName }) });
  await row.waitFor();
  await row.getByRole('button', { name: 'Sessions' }).click();
  await page.locator('#user-sessions-title', { hasText: moderatorName }).waitFor();
  await page.click('#user-sessions-end-all');
  await messageContains('Every session of ' + moderatorName + ' ended');
  await page.locator('#user-sessions-empty').waitFor({ state: 'visible' });
  await row.getByRole('button', { name: 'Disable' }).click();
  await messageContains(moderatorName + ' disabled');
  await row.locator('td', { hasText: 'disabled' }).waitFor();
  await page.screenshot({ path: join(artifacts, 'admin.png'), fullPage: true });
  await row.getByRole('button', { name: 'Enable' }).click();
  await messageContains(moderatorName + ' enabled');
  await row.locator('td', { hasText: 'active' }).waitFor();
  const roles = row.locator('input.roles');
  await roles.fill('user');
  await row.getByRole('button', { name: 'Save roles' }).click();
  await messageContains('Roles of ' + moderatorName + ' saved');
  check(await row.locator('input.roles').inputValue() === 'user', 'the role change did not show');

  step = 'an admin creates a service account and sees its secret once';
  const accountName = 'svc-' + Date.now().toString(36);
  await page.fill('#service-account-name', accountName);
  await page.fill('#service-account-roles', 'user, moderator');
  await page.click('#service-account-submit');
  await messageContains('Service account ' + accountName + ' created');
  await page.locator('#service-account-secret').waitFor({ state: 'visible' });
  await page.locator('#service-account-secret', { hasText: 'will not be shown again' }).waitFor();
  const clientId = await page.inputValue('#secret-client-id');
  const secret = await page.inputValue('#secret-value');
  check(clientId.length > 0 && secret.length >= 32, 'the client id or secret field is empty');

  step = 'the service account is listed, without its secret';
  const account = page.locator('#service-accounts-body tr', { has: page.locator('td', { hasText: accountName }) });
  await account.waitFor();
  check((await account.locator('td.client-id').textContent()) === clientId, 'the listed client id is not the created one');
  await account.locator('td', { hasText: 'moderator' }).waitFor();
  await page.screenshot({ path: join(artifacts, 'service-accounts.png'), fullPage: true });

  step = 'the shown secret gets a token from /oauth/token';
  async function tokenStatus(id, clientSecret) {
    const response = await page.request.post(new URL('/oauth/token', url).href, {
      form: { grant_type: 'client_credentials', client_id: id, client_secret: clientSecret },
    });
    return response.status();
  }
  check(await tokenStatus(clientId, secret) === 200, 'the shown secret got no token');

  step = 'the secret is gone from the page once stored';
  await page.click('#secret-done');
  check(await page.locator('#service-account-secret').isHidden(), 'the secret box is still shown');
  check(!(await page.content()).includes(secret), 'the secret is still in the page');

  step = 'an admin disables, enables, rotates and deletes the service account';
  await account.getByRole('button', { name: 'Disable' }).click();
  await messageContains(accountName + ' disabled');
  await account.locator('td', { hasText: 'disabled' }).waitFor();
  check(await tokenStatus(clientId, secret) === 401, 'a disabled service account got a token');
  await account.getByRole('button', { name: 'Enable' }).click();
  await messageContains(accountName + ' enabled');
  await account.locator('td', { hasText: 'active' }).waitFor();
  page.once('dialog', (dialog) => dialog.accept());
  await account.getByRole('button', { name: 'Rotate secret' }).click();
  await messageContains('New secret for ' + accountName);
  await page.locator('#service-account-secret').waitFor({ state: 'visible' });
  const rotated = await page.inputValue('#secret-value');
  check(rotated.length >= 32 && rotated !== secret, 'rotation showed no new secret');
  check(await tokenStatus(clientId, rotated) === 200, 'the rotated secret got no token');
  await page.click('#secret-done');
  page.once('dialog', (dialog) => dialog.accept());
  await account.getByRole('button', { name: 'Delete' }).click();
  await messageContains(accountName + ' deleted');
  await account.waitFor({ state: 'detached' });
  check(await tokenStatus(clientId, rotated) === 401, 'a deleted service account got a token');
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
