// jobrt dashboard: reads the REST API of `jobrt web` every 2 s and draws it. Every value from
// the server is put into the page as text (textContent / createTextNode), never as HTML, so a
// job whose args contain <script> shows those characters.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const REFRESH_MS = 2000;
  let failedQueue = null;      // queue shown in the failed-jobs panel
  let timer = null;
  let historyAt = 0;

  // el('td', {class: 'n'}, 'text', child...) -> element; strings become text nodes.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      e.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  function toast(msg) {
    const t = $('toast');
    t.textContent = msg;
    t.hidden = false;
    clearTimeout(toast.t);
    toast.t = setTimeout(() => { t.hidden = true; }, 3000);
  }

  class AuthError extends Error {}

  async function api(method, path, body) {
    const opts = { method, headers: {}, credentials: 'same-origin' };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(path, opts);
    if (res.status === 401) throw new AuthError('token required');
    if (res.status === 204) return null;
    const data = await res.json().catch(() => ({ error: 'bad answer from the server' }));
    if (!res.ok) throw new Error(data.error || ('HTTP ' + res.status));
    return data;
  }

  // The API gives args and result-value as JSON values (a string stays as it is).
  function pretty(v) {
    if (v === undefined) return '';
    if (typeof v === 'string') return v;
    return JSON.stringify(v, null, 2);
  }

  function ago(ts) {
    let t = Number(ts);
    if (!t) return '?';
    if (t > 1e11) t = t / 1000;
    const s = Math.max(0, Date.now() / 1000 - t);
    return s < 90 ? s.toFixed(0) + 's ago' : (s / 60).toFixed(0) + 'm ago';
  }

  function when(ts) {
    const t = Number(ts);
    if (!t) return '-';
    return new Date(t * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }

  function jobLink(queue, id) {
    return el('a', { href: '#/job/' + encodeURIComponent(queue) + '/' + encodeURIComponent(id) }, String(id));
  }

  // ---- overview -----------------------------------------------------------------------------

  const COLS = ['pending', 'delayed', 'parked', 'executing', 'failed', 'completed'];

  function drawQueues(queues) {
    const body = $('queues').tBodies[0];
    const names = Object.keys(queues).sort();
    body.replaceChildren(...names.map((name) => {
      const q = queues[name];
      const row = el('tr', { 'data-queue': name }, el('td', {}, name), el('td', {}, q.type || '?'));
      for (const c of COLS) {
        const v = q.error ? '-' : String(q[c] || 0);
        const td = el('td', { class: 'n' + (c === 'failed' && q[c] > 0 ? ' bad' : ''), 'data-col': c }, v);
        if (c === 'failed' && q[c] > 0) {
          td.style.cursor = 'pointer';
          td.title = 'show the failed jobs';
          td.addEventListener('click', () => { failedQueue = name; $('failed-queue').value = name; refreshFailed(); });
        }
        row.appendChild(td);
      }
      // flow control (jobrt pause, jobrt limit) and cron entries
      const flow = [];
      if (q.paused) flow.push('paused');
      if (q.rate_max) flow.push(q.rate_max + '/' + q.rate_per + 's');
      if (q.max_active) flow.push('\u2264' + q.max_active + ' running');
      if (q.crons) flow.push(q.crons + ' cron');
      row.appendChild(el('td', { class: q.paused ? 'bad' : '', 'data-flow': '' }, flow.join(', ')));
      if (q.error) row.title = q.error;
      return row;
    }));
    $('no-queues').hidden = names.length > 0;
    const sel = $('failed-queue');
    const cur = failedQueue || names.find((n) => queues[n].failed > 0) || names[0] || null;
    sel.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
    if (cur) { sel.value = cur; failedQueue = cur; }
  }

  function drawWorkers(workers) {
    $('workers-count').textContent = workers.length + ' alive';
    $('workers').tBodies[0].replaceChildren(...workers.map((w) => el('tr', { 'data-worker': w.id },
      el('td', {}, String(w.id)), el('td', {}, String(w.queues || '')),
      el('td', { class: 'n' }, String(w.concurrency || '?')), el('td', { class: 'n' }, String(w.inflight || 0)),
      el('td', { class: 'n' }, String(w.done || 0)), el('td', { class: 'n' }, String(w.failed || 0)),
      el('td', { class: 'n' }, ago(w.heartbeat)))));
  }

  // Bars per minute: completed up, failed attempts down from the same axis.
  function drawChart(h) {
    const NS = 'http://www.w3.org/2000/svg';
    const W = 600, H = 160, top = 10, mid = 110, bottom = 140;
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('preserveAspectRatio', 'none');
    const n = h.minutes.length;
    const maxc = Math.max(1, ...h.completed);
    const maxf = Math.max(1, ...h.failed);
    const bw = W / n;
    const rect = (x, y, w, hh, cls, title) => {
      const r = document.createElementNS(NS, 'rect');
      r.setAttribute('x', x); r.setAttribute('y', y); r.setAttribute('width', w); r.setAttribute('height', hh);
      r.setAttribute('class', cls);
      const t = document.createElementNS(NS, 'title');
      t.textContent = title;
      r.appendChild(t);
      svg.appendChild(r);
    };
    const line = document.createElementNS(NS, 'line');
    line.setAttribute('x1', 0); line.setAttribute('x2', W); line.setAttribute('y1', mid); line.setAttribute('y2', mid);
    svg.appendChild(line);
    for (let i = 0; i < n; i++) {
      const label = new Date(h.minutes[i] * 60000).toISOString().slice(11, 16) + 'Z';
      const c = h.completed[i], f = h.failed[i];
      if (c > 0) rect(i * bw + 0.5, mid - (mid - top) * c / maxc, bw - 1, (mid - top) * c / maxc, 'ok', `${label}: ${c} completed`);
      if (f > 0) rect(i * bw + 0.5, mid, bw - 1, (bottom - mid) * f / maxf, 'bad', `${label}: ${f} failed`);
    }
    const text = (x, s, anchor) => {
      const t = document.createElementNS(NS, 'text');
      t.setAttribute('x', x); t.setAttribute('y', H - 4); t.setAttribute('class', 'axis');
      t.setAttribute('text-anchor', anchor);
      t.textContent = s;
      svg.appendChild(t);
    };
    text(2, '-60 min', 'start');
    text(W - 2, 'now · peak ' + maxc + '/min', 'end');
    $('chart').replaceChildren(svg);
  }

  async function refreshFailed() {
    const q = failedQueue;
    if (!q) { $('failed').replaceChildren(); $('failed-total').textContent = ''; return; }
    const data = await api('GET', '/api/queues/' + encodeURIComponent(q) + '/failed?count=50');
    if (q !== failedQueue) return;
    $('failed-total').textContent = data.total + ' failed' + (data.total > data.jobs.length ? ` (newest ${data.jobs.length} shown)` : '');
    $('failed').replaceChildren(...data.jobs.map((r) => el('li', { class: 'failed-job', 'data-id': r.id },
      el('div', { class: 'head' },
        jobLink(q, r.id), el('strong', {}, String(r['function'] || '?')),
        el('span', { class: 'muted' }, 'failed ' + when(r['finished-created']) + ', attempts ' + (r.attempts || '?')),
        el('button', { class: 'small retry', onclick: () => retryJob(q, r.id) }, 'Retry'),
        el('button', { class: 'small danger', onclick: () => deleteJob(q, r.id) }, 'Delete')),
      el('div', { class: 'reason' }, String(r['error-reason'] || 'failed')),
      el('details', {}, el('summary', {}, 'args and traceback'),
        el('pre', { class: 'args' }, pretty(r.args)),
        el('pre', { class: 'traceback' }, String(r['error-exception'] || '(none)'))))));
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const st = await api('GET', '/api/stats');
      drawQueues(st.queues);
      drawWorkers(st.workers);
      if (Date.now() - historyAt > 10000) {
        historyAt = Date.now();
        drawChart(await api('GET', '/api/history?minutes=60'));
      }
      await refreshFailed();
      $('status').textContent = 'updated ' + new Date().toLocaleTimeString();
      $('status').classList.remove('down');
      $('login').hidden = true;
      document.body.dataset.ready = '1';
    } catch (e) {
      if (e instanceof AuthError) { showLogin(); return; }
      $('status').textContent = 'cannot update: ' + e.message;
      $('status').classList.add('down');
    }
    timer = setTimeout(route, REFRESH_MS);
  }

  async function act(what, fn) {
    try {
      const msg = await fn();
      toast(msg || what + ': done');
    } catch (e) {
      if (e instanceof AuthError) return showLogin();
      toast(what + ': ' + e.message);
    }
    route();
  }

  function retryJob(q, id) {
    act('retry', async () => { await api('POST', `/api/queues/${encodeURIComponent(q)}/failed/${encodeURIComponent(id)}/retry`); return `job ${id} of ${q} queued again`; });
  }

  function deleteJob(q, id) {
    if (!confirm(`Delete job ${id} of queue ${q}?`)) return;
    act('delete', async () => { await api('DELETE', `/api/queues/${encodeURIComponent(q)}/jobs/${encodeURIComponent(id)}`); return `job ${id} deleted`; });
  }

  // ---- one job --------------------------------------------------------------------------------

  // The flow a job belongs to, as a tree from its root (GET .../jobs/{ID}/flow): each job a link,
  // its job name and its state; the job shown is in bold.
  function drawFlow(tree, queue, id) {
    function node(t) {
      const here = t.queue === queue && String(t.id) === String(id);
      const li = el('li', { class: here ? 'here' : undefined, 'data-job': t.queue + '/' + t.id },
        el('span', { class: 'node' }, el('span', { class: 'muted' }, t.queue + ' '), jobLink(t.queue, t.id),
          t.job ? ' ' + t.job : '', el('span', { class: 'state ' + t.state }, t.state)),
        t.error ? el('span', { class: 'error' }, ' ' + t.error) : null);
      if (t.children && t.children.length) {
        const ul = el('ul', {}, ...t.children.map(node));
        if (t.more) ul.appendChild(el('li', { class: 'muted' }, `… and ${t.more} more`));
        li.appendChild(ul);
      }
      return li;
    }
    $('job-flow').replaceChildren(node(tree));
  }

  async function showJob(queue, id) {
    clearTimeout(timer);
    $('job-title').textContent = `Job ${id} in queue ${queue}`;
    $('job-error').textContent = '';
    try {
      const r = await api('GET', `/api/queues/${encodeURIComponent(queue)}/jobs/${encodeURIComponent(id)}`);
      const keys = Object.keys(r).sort();
      $('job-record').tBodies[0].replaceChildren(...keys.filter((k) => k !== 'args' && k !== 'result-value').map((k) => {
        const v = /-created$|^cancelled$|^due$/.test(k) ? `${r[k]} (${when(r[k])})` : String(r[k]);
        return el('tr', { 'data-field': k }, el('td', {}, k), el('td', {}, v));
      }));
      $('job-args').textContent = pretty(r.args);
      $('job-result').textContent = r['result-value'] !== undefined ? pretty(r['result-value'])
        : (r['error-reason'] ? 'error: ' + r['error-reason'] : '(not finished)');
      $('job-flow-box').hidden = !r.flow;
      if (r.flow) {
        drawFlow(await api('GET', `/api/queues/${encodeURIComponent(queue)}/jobs/${encodeURIComponent(id)}/flow`), queue, id);
      } else {
        $('job-flow').replaceChildren();
      }
      $('job-delete').onclick = () => {
        if (!confirm(`Delete job ${id} of queue ${queue}?`)) return;
        act('delete', async () => { await api('DELETE', `/api/queues/${encodeURIComponent(queue)}/jobs/${encodeURIComponent(id)}`); location.hash = '#/'; return `job ${id} deleted`; });
      };
      document.body.dataset.ready = '1';
    } catch (e) {
      if (e instanceof AuthError) return showLogin();
      $('job-record').tBodies[0].replaceChildren();
      $('job-args').textContent = $('job-result').textContent = '';
      $('job-error').textContent = e.message;
    }
    timer = setTimeout(route, REFRESH_MS);
  }

  // ---- login and routing ----------------------------------------------------------------------

  function showLogin() {
    clearTimeout(timer);
    $('login').hidden = false;
    $('login-token').focus();
  }

  function route() {
    const m = location.hash.match(/^#\/job\/([^/]+)\/(.+)$/);
    $('overview').hidden = !!m;
    $('jobpage').hidden = !m;
    if (m) return showJob(decodeURIComponent(m[1]), decodeURIComponent(m[2]));
    return refresh();
  }

  function init() {
    $('login-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      $('login-error').textContent = '';
      try {
        await api('POST', '/api/login', { token: $('login-token').value });
        $('login-token').value = '';
        $('login').hidden = true;
        $('logout').hidden = false;
        route();
      } catch (e) {
        $('login-error').textContent = e instanceof AuthError ? 'wrong token' : e.message;
      }
    });
    $('logout').addEventListener('click', async () => { await api('POST', '/api/logout', {}); showLogin(); });
    $('failed-queue').addEventListener('change', (ev) => { failedQueue = ev.target.value; refreshFailed().catch(() => {}); });
    $('retry-all').addEventListener('click', () => {
      const q = failedQueue;
      if (!q) return;
      act('retry', async () => { const r = await api('POST', `/api/queues/${encodeURIComponent(q)}/failed/retry`); return `${r.retried} job(s) of ${q} queued again`; });
    });
    $('delete-all').addEventListener('click', () => {
      const q = failedQueue;
      if (!q || !confirm(`Delete every failed job of queue ${q}?`)) return;
      act('delete', async () => { const r = await api('DELETE', `/api/queues/${encodeURIComponent(q)}/failed`); return `${r.deleted} failed job(s) of ${q} deleted`; });
    });
    $('find').addEventListener('submit', (ev) => {
      ev.preventDefault();
      location.hash = '#/job/' + encodeURIComponent($('find-queue').value) + '/' + encodeURIComponent($('find-id').value);
    });
    window.addEventListener('hashchange', route);
    api('GET', '/api/session').then((s) => {
      $('logout').hidden = !(s.token_required && s.signed_in);
      if (s.token_required && !s.signed_in) showLogin(); else route();
    }).catch(() => route());
  }

  init();
}());
