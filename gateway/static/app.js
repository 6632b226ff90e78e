// The persons page: talks to the gateway's JSON API with fetch. The access token lives in
// sessionStorage (this tab only, never a cookie); every piece of data reaches the DOM as text
// (textContent), never parsed as HTML.
'use strict';

const TOKEN_KEY = 'persons.session';
const PAGE_SIZE = 10;

const $ = (id) => document.getElementById(id);

let session = loadSession();
// Page tokens of the pages seen so far: pages[i] is the token that fetches page i.
let pages = [''];
let pageIndex = 0;

function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(TOKEN_KEY) || 'null');
  } catch {
    return null;
  }
}

function saveSession(value) {
  session = value;
  if (value) sessionStorage.setItem(TOKEN_KEY, JSON.stringify(value));
  else sessionStorage.removeItem(TOKEN_KEY);
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
// message is fit to show.
async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (session) headers.Authorization = 'Bearer ' + session.accessToken;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
    });
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection and try again.');
  }
  const type = response.headers.get('Content-Type') || '';
  const data = response.status === 204 ? null
    : type.includes('application/json') ? await response.json().catch(() => null)
    : await response.text();
  if (response.ok) return data;
  throw new ApiError(response.status, data && data.code, explain(response.status, data));
}

function explain(status, data) {
  const detail = data && typeof data.message === 'string' ? data.message : '';
  switch (status) {
    case 400: return 'Please check your input: ' + (detail || 'the request was not valid.');
    case 401: return session
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

// An expired or revoked token on a call that needs one: forget it and go back to sign-in.
function handleFailure(error) {
  if (error.status === 401 && session) {
    signOut();
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
  }
}

function roleName(role) {
  return role.replace(/^ROLE_/, '').toLowerCase();
}

function showTab(name) {
  for (const tab of ['persons', 'profile', 'boards']) {
    $('panel-' + tab).hidden = tab !== name;
    $('tab-' + tab).setAttribute('aria-pressed', String(tab === name));
  }
  if (name === 'persons') loadPersons();
  if (name === 'profile') loadProfile();
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
    saveSession({
      id: data.id, username: data.username, email: data.email,
      roles: data.roles, accessToken: data.accessToken,
    });
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

function signOut() {
  saveSession(null);
  pages = [''];
  pageIndex = 0;
  $('persons-body').replaceChildren();
  $('board-output').textContent = '';
  render();
  showMessage('Signed out.', 'info');
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

function start() {
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-up-form').addEventListener('submit', signUp);
  $('sign-out').addEventListener('click', signOut);
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
  render();
  if (session) showTab('persons');
}

start();
