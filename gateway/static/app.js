// The persons page: talks to the gateway's JSON API with fetch. The access token lives in this
// script's memory only (never in storage a script could read later); the refresh token is an
// HttpOnly cookie the gateway sets, which no script can read at all. The page renews the access
// token through that cookie before it expires and after a reload. Every piece of data reaches
// the DOM as text (textContent), never parsed as HTML.
'use strict';

const PAGE_SIZE = 10;
const USERS_PAGE_SIZE = 20;
// Renew this long before the access token expires, and never more often than the floor.
const RENEW_AHEAD_SECONDS = 30;
const RENEW_FLOOR_SECONDS = 5;

const $ = (id) => document.getElementById(id);

// { id, username, email, roles, accessToken } while signed in.
let session = null;
let renewTimer = null;
// The refresh in flight, shared by everyone who needs a fresh token meanwhile.
let refreshing = null;
// Set when a refresh found the cookie signed in to another account, which this tab then took.
let accountChanged = false;
// Page tokens of the pages seen so far: pages[i] is the token that fetches page i.
let pages = [''];
let pageIndex = 0;
let userPages = [''];
let userPageIndex = 0;
let accountPages = [''];
let accountPageIndex = 0;
// The user whose sessions the admin view shows.
let sessionsOf = null;

function saveSession(value, expiresIn) {
  session = value;
  clearTimeout(renewTimer);
  renewTimer = null;
  if (value && expiresIn > 0) {
    const seconds = Math.max(RENEW_FLOOR_SECONDS, expiresIn - RENEW_AHEAD_SECONDS);
    renewTimer = setTimeout(() => { refreshSession().catch(() => {}); }, seconds * 1000);
  }
}

// Spends the refresh cookie for a new access token (the cookie rotates on the way). Resolves to
// true when signed in afterwards; a refused cookie ends the session here too.
function refreshSession() {
  if (!refreshing) {
    accountChanged = false;
    refreshing = (async () => {
      let response;
      try {
        response = await fetch('/api/auth/refresh', {
          method: 'POST', headers: { Accept: 'application/json' }, credentials: 'same-origin',
        });
      } catch {
        return Boolean(session);
      }
      if (!response.ok) {
        discard(response);
        if (response.status === 401 || response.status === 403) saveSession(null);
        return false;
      }
      const data = await response.json();
      // The cookie is shared by every tab: another tab may have signed another account in
      // since, and the new token is then that account's. This tab takes it over rather than
      // show one account while acting as another.
      const before = session;
      const user = before && tokenSubject(data.accessToken) === before.id
        ? before : await whoAmI(data.accessToken);
      if (!user) return false;
      if (before && user.id !== before.id) {
        endLocally();
        saveSession({ ...user, accessToken: data.accessToken }, data.expiresIn);
        render();
        showTab('persons');
        accountChanged = true;
        // Nothing the previous account asked for is sent again as this one.
        return false;
      }
      saveSession({ ...user, accessToken: data.accessToken }, data.expiresIn);
      return true;
    })().finally(() => { refreshing = null; });
  }
  return refreshing;
}

// Drops the body of an answer this page does not read. API answers are `no-store`, so the
// browser's cache does not read them either, and an unread body would keep the request open.
function discard(response) {
  if (response.body) response.body.cancel().catch(() => {});
}

// The `sub` claim (the user id) of an access token, or null if it cannot be read. Only compared
// with the account this tab shows; the gateway and services verify tokens, never this page.
function tokenSubject(accessToken) {
  try {
    const payload = accessToken.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).sub || null;
  } catch {
    return null;
  }
}

// The account behind a token, in the shape sign-in answers.
async function whoAmI(accessToken) {
  const response = await fetch('/api/auth/me', {
    headers: { Accept: 'application/json', Authorization: 'Bearer ' + accessToken },
    credentials: 'same-origin',
  }).catch(() => null);
  if (!response || !response.ok) {
    if (response) discard(response);
    return null;
  }
  const user = await response.json();
  return { id: user.id, username: user.username, email: user.email, roles: user.roles };
}

function hasRole(role) {
  return Boolean(session && session.roles.includes(role));
}

function showMessage(text, kind) {
  const box = $('message');
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
}

function clearMessage() {
  $('message').hidden = true;
  $('message').textContent = '';
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Calls the API; resolves to the parsed body (JSON or text) or rejects with an ApiError whose
// message is fit to show. A 401 on a signed-in call renews the token once and tries again.
async function api(method, path, body, retried) {
  const signedIn = Boolean(session);
  const headers = { Accept: 'application/json' };
  if (session) headers.Authorization = 'Bearer ' + session.accessToken;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      // The refresh cookie is scoped to /api/auth; sign-in must be allowed to set it.
      credentials: 'same-origin',
    });
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection and try again.');
  }
  if (response.status === 401 && session && !retried) {
    if (await refreshSession()) return api(method, path, body, true);
    if (accountChanged) {
      accountChanged = false;
      throw new ApiError(401, 'account_changed', 'This tab now shows ' + session.username
        + ', who signed in in another tab. Nothing was sent as them; try again if you meant to.');
    }
  }
  const type = response.headers.get('Content-Type') || '';
  const data = response.status === 204 ? null
    : type.includes('application/json') ? await response.json().catch(() => null)
    : await response.text();
  if (response.ok) return data;
  throw new ApiError(response.status, data && data.code, explain(response.status, data, signedIn));
}

function explain(status, data, signedIn) {
  const detail = data && typeof data.message === 'string' ? data.message : '';
  switch (status) {
    case 400: return 'Please check your input: ' + (detail || 'the request was not valid.');
    case 401: return signedIn
      ? 'Your session has expired or is no longer valid. Please sign in again.'
      : (detail || 'Wrong username or password.');
    case 403: return 'You do not have permission to do that' + (detail ? ' (' + detail + ').' : '.');
    case 404: return detail || 'Not found.';
    case 409: return detail || 'That already exists.';
    case 413: return 'That is too much data to send at once.';
    case 429: return 'Too many attempts. Please wait a moment and try again.';
    case 503: return 'The service is temporarily unavailable. Please try again shortly.';
    default: return 'Something went wrong on our side (' + status + '). Please try again.';
  }
}

// A session that could not be renewed: forget it and go back to sign-in.
function handleFailure(error) {
  if (error.status === 401 && (session || !$('signed-in').hidden)) {
    endLocally();
  }
  showMessage(error.message, 'error');
}

function render() {
  const signedIn = Boolean(session);
  $('signed-out').hidden = signedIn;
  $('signed-in').hidden = !signedIn;
  $('session').hidden = !signedIn;
  if (signedIn) {
    $('session-user').textContent = session.username + ' (' + session.roles.map(roleName).join(', ') + ')';
    $('person-form').hidden = !(hasRole('ROLE_MODERATOR') || hasRole('ROLE_ADMIN'));
    $('tab-admin').hidden = !hasRole('ROLE_ADMIN');
  }
}

function roleName(role) {
  return role.replace(/^ROLE_/, '').toLowerCase();
}

function showTab(name) {
  for (const tab of ['persons', 'profile', 'boards', 'admin']) {
    $('panel-' + tab).hidden = tab !== name;
    $('tab-' + tab).setAttribute('aria-pressed', String(tab === name));
  }
  if (name === 'persons') loadPersons();
  if (name === 'profile') loadProfile();
  if (name === 'admin') {
    loadUsers();
    loadServiceAccounts();
  }
}

async function signIn(event) {
  event.preventDefault();
  clearMessage();
  const username = $('sign-in-username').value.trim();
  const password = $('sign-in-password').value;
  if (!username || !password) {
    showMessage('Enter your username (or email) and password.', 'error');
    return;
  }
  try {
    const data = await api('POST', '/api/auth/signin', { username, password });
    // The body's refresh token is for clients without cookies; this page uses the cookie.
    saveSession({
      id: data.id, username: data.username, email: data.email,
      roles: data.roles, accessToken: data.accessToken,
    }, data.expiresIn);
    $('sign-in-password').value = '';
    render();
    showTab('persons');
    showMessage('Signed in as ' + data.username + '.', 'info');
  } catch (error) {
    showMessage(error.message, 'error');
  }
}

async function signUp(event) {
  event.preventDefault();
  clearMessage();
  const username = $('sign-up-username').value.trim();
  const email = $('sign-up-email').value.trim();
  const password = $('sign-up-password').value;
  if (!username || !email || !password) {
    showMessage('Enter a username, an email and a password to sign up.', 'error');
    return;
  }
  try {
    const data = await api('POST', '/api/auth/signup', { username, email, password });
    $('sign-up-password').value = '';
    $('sign-in-username').value = username;
    showMessage((data && data.message ? data.message : 'Account created.') + ' You can sign in now.', 'info');
  } catch (error) {
    showMessage(error.message, 'error');
  }
}

// Ends the session at the gateway (which also clears the cookie), then here. `all` ends every
// session of the user.
async function signOut(all) {
  clearMessage();
  const headers = { Accept: 'application/json' };
  if (session) headers.Authorization = 'Bearer ' + session.accessToken;
  if (all === true) headers['Content-Type'] = 'application/json';
  try {
    const response = await fetch('/api/auth/signout', {
      method: 'POST', headers, credentials: 'same-origin',
      body: all === true ? JSON.stringify({ all: true }) : undefined,
    });
    discard(response);
    if (!response.ok && response.status !== 401) {
      showMessage('Could not sign out at the server (' + response.status + '). Please try again.', 'error');
      return;
    }
  } catch {
    showMessage('Cannot reach the server to sign out. Check your connection and try again.', 'error');
    return;
  }
  endLocally();
  showMessage(all === true ? 'Signed out everywhere.' : 'Signed out.', 'info');
}

// Forgets the session in this page only.
function endLocally() {
  saveSession(null);
  pages = [''];
  pageIndex = 0;
  sessionsOf = null;
  accountPages = [''];
  accountPageIndex = 0;
  $('persons-body').replaceChildren();
  $('sessions-body').replaceChildren();
  $('users-body').replaceChildren();
  $('user-sessions').hidden = true;
  $('service-accounts-body').replaceChildren();
  hideSecret();
  $('board-output').textContent = '';
  render();
}

async function loadPersons() {
  const params = new URLSearchParams({ pageSize: String(PAGE_SIZE) });
  if (pages[pageIndex]) params.set('pageToken', pages[pageIndex]);
  const name = $('filter-name').value.trim();
  if (name) params.set('name', name);
  try {
    const data = await api('GET', '/api/persons?' + params.toString());
    renderPersons(data.persons);
    pages = pages.slice(0, pageIndex + 1);
    if (data.nextPageToken) pages.push(data.nextPageToken);
    $('page-prev').disabled = pageIndex === 0;
    $('page-next').disabled = !data.nextPageToken;
    $('page-number').textContent = 'Page ' + (pageIndex + 1);
  } catch (error) {
    handleFailure(error);
  }
}

function renderPersons(persons) {
  const rows = persons.map((person) => {
    const row = document.createElement('tr');
    row.dataset.personId = String(person.personId);
    for (const value of [person.personId, person.name, person.email, person.age]) {
      const cell = document.createElement('td');
      cell.textContent = String(value);
      row.append(cell);
    }
    const actions = document.createElement('td');
    if (hasRole('ROLE_MODERATOR') || hasRole('ROLE_ADMIN')) {
      actions.append(button('Edit', () => editPerson(person)));
    }
    if (hasRole('ROLE_ADMIN')) {
      actions.append(button('Delete', () => deletePerson(person)));
    }
    row.append(actions);
    return row;
  });
  $('persons-body').replaceChildren(...rows);
  $('persons-empty').hidden = persons.length > 0;
}

function button(label, onClick) {
  const element = document.createElement('button');
  element.type = 'button';
  element.textContent = label;
  element.addEventListener('click', onClick);
  return element;
}

function editPerson(person) {
  $('person-id').value = String(person.personId);
  $('person-name').value = person.name;
  $('person-email').value = person.email;
  $('person-age').value = String(person.age);
  $('person-form-title').textContent = 'Edit person ' + person.personId;
  $('person-submit').textContent = 'Save';
  $('person-cancel').hidden = false;
  $('person-name').focus();
}

function resetPersonForm() {
  $('person-form').reset();
  $('person-id').value = '';
  $('person-form-title').textContent = 'New person';
  $('person-submit').textContent = 'Create';
  $('person-cancel').hidden = true;
}

async function savePerson(event) {
  event.preventDefault();
  clearMessage();
  const id = $('person-id').value;
  const name = $('person-name').value.trim();
  const email = $('person-email').value.trim();
  const ageText = $('person-age').value.trim();
  const age = Number(ageText);
  if (!name || !email || ageText === '' || !Number.isInteger(age)) {
    showMessage('Enter a name, an email and a whole-number age.', 'error');
    return;
  }
  try {
    const person = id
      ? await api('PUT', '/api/persons/' + encodeURIComponent(id), { name, email, age })
      : await api('POST', '/api/persons', { name, email, age });
    resetPersonForm();
    showMessage((id ? 'Saved ' : 'Created ') + person.name + '.', 'info');
    loadPersons();
  } catch (error) {
    handleFailure(error);
  }
}

async function deletePerson(person) {
  if (!window.confirm('Delete ' + person.name + '?')) return;
  clearMessage();
  try {
    await api('DELETE', '/api/persons/' + encodeURIComponent(person.personId));
    showMessage('Deleted ' + person.name + '.', 'info');
    loadPersons();
  } catch (error) {
    handleFailure(error);
  }
}

async function loadProfile() {
  try {
    const user = await api('GET', '/api/auth/me');
    $('profile-id').textContent = user.id;
    $('profile-username').textContent = user.username;
    $('profile-email').textContent = user.email;
    $('profile-roles').textContent = user.roles.map(roleName).join(', ');
    $('profile-created').textContent = user.createdAt || '';
  } catch (error) {
    handleFailure(error);
    return;
  }
  loadMySessions();
}

async function loadMySessions() {
  try {
    const data = await api('GET', '/api/auth/sessions');
    $('sessions-body').replaceChildren(...data.sessions.map((s) => sessionRow(s, async () => {
      await api('DELETE', '/api/auth/sessions/' + encodeURIComponent(s.id));
      if (s.current) {
        await signOut();
      } else {
        showMessage('Session ended.', 'info');
        loadMySessions();
      }
    })));
  } catch (error) {
    handleFailure(error);
  }
}

// One row of a session table; `end` ends the session (errors are shown).
function sessionRow(s, end) {
  const row = document.createElement('tr');
  row.dataset.sessionId = s.id;
  if (s.current) row.className = 'current';
  for (const value of [s.createdAt, s.lastUsedAt, s.clientAddress, s.userAgent]) {
    const cell = document.createElement('td');
    cell.textContent = value || '';
    row.append(cell);
  }
  const actions = document.createElement('td');
  actions.append(button(s.current ? 'End (this one)' : 'End', async () => {
    clearMessage();
    try {
      await end();
    } catch (error) {
      handleFailure(error);
    }
  }));
  row.append(actions);
  return row;
}

async function changePassword(event) {
  event.preventDefault();
  clearMessage();
  const currentPassword = $('password-current').value;
  const newPassword = $('password-new').value;
  if (!currentPassword || !newPassword) {
    showMessage('Enter your current password and a new one.', 'error');
    return;
  }
  try {
    await api('PUT', '/api/auth/password', { currentPassword, newPassword });
    $('password-form').reset();
    showMessage('Password changed. Your other sessions were signed out.', 'info');
    loadMySessions();
  } catch (error) {
    // A wrong current password is refused (403) without ending the session; a 401 that
    // survived a renewal means the session itself has ended.
    if (error.status === 403 || (error.status === 401 && session)) {
      showMessage('Your current password is not correct.', 'error');
    } else {
      handleFailure(error);
    }
  }
}

async function loadUsers() {
  const params = new URLSearchParams({ pageSize: String(USERS_PAGE_SIZE) });
  if (userPages[userPageIndex]) params.set('pageToken', userPages[userPageIndex]);
  try {
    const data = await api('GET', '/api/admin/users?' + params.toString());
    $('users-body').replaceChildren(...data.users.map(userRow));
    userPages = userPages.slice(0, userPageIndex + 1);
    if (data.nextPageToken) userPages.push(data.nextPageToken);
    $('users-prev').disabled = userPageIndex === 0;
    $('users-next').disabled = !data.nextPageToken;
    $('users-page').textContent = 'Page ' + (userPageIndex + 1);
  } catch (error) {
    handleFailure(error);
  }
}

function userRow(user) {
  const row = document.createElement('tr');
  row.dataset.userId = user.id;
  row.dataset.username = user.username;
  if (user.disabled) row.className = 'disabled';
  for (const value of [user.username, user.email]) {
    const cell = document.createElement('td');
    cell.textContent = value;
    row.append(cell);
  }
  const roles = document.createElement('td');
  const input = document.createElement('input');
  input.className = 'roles';
  input.value = user.roles.map(roleName).join(', ');
  input.setAttribute('aria-label', 'Roles of ' + user.username);
  roles.append(input, button('Save roles', () => adminAction(async () => {
    const names = input.value.split(',').map((r) => r.trim()).filter(Boolean);
    await api('PUT', '/api/admin/users/' + encodeURIComponent(user.id) + '/roles', { roles: names });
    return 'Roles of ' + user.username + ' saved.';
  })));
  row.append(roles);
  const status = document.createElement('td');
  status.textContent = user.disabled ? 'disabled' : 'active';
  row.append(status);
  const actions = document.createElement('td');
  const toggle = user.disabled ? 'enable' : 'disable';
  actions.append(
    button(user.disabled ? 'Enable' : 'Disable', () => adminAction(async () => {
      await api('POST', '/api/admin/users/' + encodeURIComponent(user.id) + '/' + toggle);
      return user.username + (user.disabled ? ' enabled.' : ' disabled.');
    })),
    button('Sessions', () => { sessionsOf = user; loadUserSessions(); }),
  );
  row.append(actions);
  return row;
}

// Runs an admin change, shows its outcome, and shows the list as it now is.
async function adminAction(change) {
  clearMessage();
  try {
    showMessage(await change(), 'info');
  } catch (error) {
    handleFailure(error);
  }
  loadUsers();
  if (sessionsOf) loadUserSessions();
}

async function loadUserSessions() {
  if (!sessionsOf) return;
  const user = sessionsOf;
  const path = '/api/admin/users/' + encodeURIComponent(user.id) + '/sessions';
  try {
    const data = await api('GET', path);
    $('user-sessions-title').textContent = 'Sessions of ' + user.username;
    $('user-sessions-body').replaceChildren(...data.sessions.map((s) => sessionRow(s, async () => {
      await api('DELETE', path + '/' + encodeURIComponent(s.id));
      showMessage('Session of ' + user.username + ' ended.', 'info');
      loadUserSessions();
    })));
    $('user-sessions-empty').hidden = data.sessions.length > 0;
    $('user-sessions').hidden = false;
  } catch (error) {
    handleFailure(error);
  }
}

async function endAllUserSessions() {
  if (!sessionsOf) return;
  const user = sessionsOf;
  await adminAction(async () => {
    await api('DELETE', '/api/admin/users/' + encodeURIComponent(user.id) + '/sessions');
    return 'Every session of ' + user.username + ' ended.';
  });
}

async function loadServiceAccounts() {
  const params = new URLSearchParams({ pageSize: String(USERS_PAGE_SIZE) });
  if (accountPages[accountPageIndex]) params.set('pageToken', accountPages[accountPageIndex]);
  try {
    const data = await api('GET', '/api/admin/service-accounts?' + params.toString());
    $('service-accounts-body').replaceChildren(...data.serviceAccounts.map(serviceAccountRow));
    $('service-accounts-empty').hidden = data.serviceAccounts.length > 0;
    accountPages = accountPages.slice(0, accountPageIndex + 1);
    if (data.nextPageToken) accountPages.push(data.nextPageToken);
    $('service-accounts-prev').disabled = accountPageIndex === 0;
    $('service-accounts-next').disabled = !data.nextPageToken;
    $('service-accounts-page').textContent = 'Page ' + (accountPageIndex + 1);
  } catch (error) {
    handleFailure(error);
  }
}

function serviceAccountRow(account) {
  const row = document.createElement('tr');
  row.dataset.clientId = account.clientId;
  if (account.disabled) row.className = 'disabled';
  const cells = [
    account.name, account.clientId, account.roles.join(', '),
    account.disabled ? 'disabled' : 'active', account.createdAt || '',
  ];
  cells.forEach((value, i) => {
    const cell = document.createElement('td');
    if (i === 1) cell.className = 'client-id';
    cell.textContent = value;
    row.append(cell);
  });
  const path = '/api/admin/service-accounts/' + encodeURIComponent(account.clientId);
  const actions = document.createElement('td');
  actions.append(
    button(account.disabled ? 'Enable' : 'Disable', () => serviceAccountAction(async () => {
      await api('POST', path + (account.disabled ? '/enable' : '/disable'));
      return account.name + (account.disabled ? ' enabled.' : ' disabled: it gets no token, and its tokens are revoked.');
    })),
    button('Rotate secret', () => serviceAccountAction(async () => {
      if (!window.confirm('Give ' + account.name + ' a new secret? The current one keeps working for 24 hours.')) return null;
      const rotated = await api('POST', path + '/secret', {});
      showSecret(rotated);
      const until = rotated.previousSecretExpiresAt;
      return 'New secret for ' + account.name + '.' + (until ? ' The previous one works until ' + until + '.' : '');
    })),
    button('Delete', () => serviceAccountAction(async () => {
      if (!window.confirm('Delete ' + account.name + '? Its tokens stop working at once.')) return null;
      await api('DELETE', path);
      return account.name + ' deleted.';
    })),
  );
  row.append(actions);
  return row;
}

// Runs a service-account change, shows its outcome (none when the admin cancelled), and shows
// the list as it now is.
async function serviceAccountAction(change) {
  clearMessage();
  try {
    const outcome = await change();
    if (outcome) showMessage(outcome, 'info');
  } catch (error) {
    handleFailure(error);
  }
  loadServiceAccounts();
}

async function createServiceAccount(event) {
  event.preventDefault();
  clearMessage();
  const name = $('service-account-name').value.trim();
  const roles = $('service-account-roles').value.split(',').map((r) => r.trim()).filter(Boolean);
  if (!/^[a-z0-9._-]{3,64}$/.test(name)) {
    showMessage('A service account name is 3 to 64 of a-z, 0-9, ".", "_" and "-".', 'error');
    return;
  }
  await serviceAccountAction(async () => {
    const created = await api('POST', '/api/admin/service-accounts', { name, roles });
    $('service-account-form').reset();
    showSecret(created);
    return 'Service account ' + created.name + ' created.';
  });
}

// The secret, once: in a read-only field to copy from, until the admin says it is stored.
function showSecret(account) {
  $('secret-account').textContent = account.name;
  $('secret-client-id').value = account.clientId;
  $('secret-value').value = account.clientSecret;
  $('service-account-secret').hidden = false;
  $('secret-value').focus();
  $('secret-value').select();
}

function hideSecret() {
  $('secret-value').value = '';
  $('secret-client-id').value = '';
  $('service-account-secret').hidden = true;
}

async function copySecret() {
  const field = $('secret-value');
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    showMessage('Secret copied to the clipboard.', 'info');
  } catch {
    showMessage('Copying is not allowed here: the secret is selected, press Ctrl+C (or Cmd+C).', 'info');
  }
}

async function showBoard(name) {
  clearMessage();
  const output = $('board-output');
  output.textContent = 'Loading…';
  try {
    output.textContent = await api('GET', '/api/test/' + name);
  } catch (error) {
    output.textContent = '';
    handleFailure(error);
  }
}

async function start() {
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-up-form').addEventListener('submit', signUp);
  $('sign-out').addEventListener('click', () => signOut(false));
  $('sign-out-everywhere').addEventListener('click', () => signOut(true));
  $('password-form').addEventListener('submit', changePassword);
  $('users-prev').addEventListener('click', () => { if (userPageIndex > 0) { userPageIndex -= 1; loadUsers(); } });
  $('users-next').addEventListener('click', () => { if (userPageIndex + 1 < userPages.length) { userPageIndex += 1; loadUsers(); } });
  $('user-sessions-end-all').addEventListener('click', endAllUserSessions);
  $('service-account-form').addEventListener('submit', createServiceAccount);
  $('secret-copy').addEventListener('click', copySecret);
  $('secret-done').addEventListener('click', hideSecret);
  $('service-accounts-prev').addEventListener('click', () => { if (accountPageIndex > 0) { accountPageIndex -= 1; loadServiceAccounts(); } });
  $('service-accounts-next').addEventListener('click', () => { if (accountPageIndex + 1 < accountPages.length) { accountPageIndex += 1; loadServiceAccounts(); } });
  $('person-form').addEventListener('submit', savePerson);
  $('person-cancel').addEventListener('click', resetPersonForm);
  $('filter-form').addEventListener('submit', (event) => {
    event.preventDefault();
    pages = [''];
    pageIndex = 0;
    loadPersons();
  });
  $('page-prev').addEventListener('click', () => { if (pageIndex > 0) { pageIndex -= 1; loadPersons(); } });
  $('page-next').addEventListener('click', () => { if (pageIndex + 1 < pages.length) { pageIndex += 1; loadPersons(); } });
  for (const tab of document.querySelectorAll('[data-tab]')) {
    tab.addEventListener('click', () => { clearMessage(); showTab(tab.dataset.tab); });
  }
  for (const board of document.querySelectorAll('[data-board]')) {
    board.addEventListener('click', () => showBoard(board.dataset.board));
  }
  // Earlier versions kept the token in sessionStorage; nothing is kept there now.
  try { sessionStorage.removeItem('persons.session'); } catch { /* storage may be off */ }
  // After a reload: the cookie, if there is one, signs this page back in.
  await refreshSession();
  render();
  if (session) showTab('persons');
}

start();
