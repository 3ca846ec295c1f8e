// The Switchboard admin dashboard. Reads /health, /clients, /tunnels and
// /metrics on this admin listener every 2 s with the admin token as a bearer
// header, and draws them. The token comes from the form or a #token=…
// fragment (removed from the address bar at once) and is kept in this tab's
// sessionStorage only. A 401 clears everything shown and stops reading until
// another token is given. A read that fails otherwise (the relay is down or
// does not answer within READ_MS, or answers another error) marks everything
// shown as stale (dimmed, "stale since HH:MM:SS") and adds no chart point
// until a read succeeds again, which clears the mark. Every value from the
// relay is put in the page as text (textContent), never as markup.
'use strict';

(() => {
  const POLL_MS = 2000;
  // A read not answered within this is a failed read (a hung relay).
  const READ_MS = 4000;
  const POINTS = 150;
  const TOKEN_KEY = 'switchboard-admin-token';

  class Denied extends Error {}

  const $ = (id) => document.getElementById(id);
  const state = {
    token: '',
    denied: false,
    polls: 0,
    timer: null,
    generation: 0,
    busy: false,
    staleSince: null,
    previous: null,
    health: null,
    clients: [],
    tunnels: null,
    series: { t: [], forwards: [], connected: [], registered: [], toAgent: [], toClient: [] },
  };

  function takeToken() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    if (fragment.has('token')) {
      sessionStorage.setItem(TOKEN_KEY, fragment.get('token'));
      history.replaceState(null, '', location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY) || '';
  }

  async function get(path, as) {
    const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
    const response = await fetch(path, { headers, cache: 'no-store', signal: AbortSignal.timeout(READ_MS) });
    if (response.status === 401) throw new Denied(path);
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return as === 'text' ? response.text() : response.json();
  }

  // Sums every sample of each metric name (over its labels).
  function parseMetrics(text) {
    const sums = new Map();
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      const match = /^([A-Za-z_:][\w:]*)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!match) continue;
      const value = Number(match[2]);
      if (Number.isFinite(value)) sums.set(match[1], (sums.get(match[1]) || 0) + value);
    }
    return (name) => sums.get(name) || 0;
  }

  function text(element, value) {
    element.textContent = value === null || value === undefined ? '–' : String(value);
  }

  function cell(row, value) {
    const td = row.insertCell();
    text(td, value);
    return td;
  }

  function uptime(seconds) {
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    return (d ? `${d}d ` : '') + `${h}h ${m}m ${s % 60}s`;
  }

  function makeChart(id, series) {
    const element = $(id);
    const opts = {
      width: Math.max(element.clientWidth, 240),
      height: 150,
      legend: { show: true, live: false },
      cursor: { show: false },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max, 1)] } },
      series: [{}, ...series.map(([label, stroke, dash]) => ({ label, stroke, dash, width: 2 }))],
      axes: [{}, { size: 60 }],
    };
    return new uPlot(opts, [[], ...series.map(() => [])], element);
  }

  const charts = {
    forwards: makeChart('chart-forwards', [['forwards/s', '#2563eb']]),
    connections: makeChart('chart-connections', [['connected', '#059669'], ['registered', '#d97706']]),
    tunnel: makeChart('chart-tunnel', [['to agents', '#7c3aed'], ['to clients', '#db2777', [6, 4]]]),
  };

  window.addEventListener('resize', () => {
    for (const [id, chart] of [['chart-forwards', charts.forwards], ['chart-connections', charts.connections], ['chart-tunnel', charts.tunnel]]) {
      chart.setSize({ width: Math.max($(id).clientWidth, 240), height: 150 });
    }
  });

  function drawCharts() {
    const s = state.series;
    charts.forwards.setData([s.t, s.forwards]);
    charts.connections.setData([s.t, s.connected, s.registered]);
    charts.tunnel.setData([s.t, s.toAgent, s.toClient]);
  }

  // One point per read: gauges as they are, counters as rates since the last read.
  function addPoint(metric, health) {
    const now = Date.now() / 1000;
    const counters = {
      forwards: metric('switchboard_forwarded_messages_total'),
      toAgent: metric('switchboard_tunnel_bytes_to_agent_total'),
      toClient: metric('switchboard_tunnel_bytes_to_client_total'),
    };
    const previous = state.previous;
    const rate = (key) => {
      if (!previous || now <= previous.t) return null;
      return Math.max(0, (counters[key] - previous.counters[key]) / (now - previous.t));
    };
    state.previous = { t: now, counters };
    const s = state.series;
    s.t.push(now);
    s.forwards.push(rate('forwards'));
    s.connected.push(health.connected);
    s.registered.push(health.registered);
    s.toAgent.push(rate('toAgent'));
    s.toClient.push(rate('toClient'));
    for (const key of Object.keys(s)) {
      if (s[key].length > POINTS) s[key].splice(0, s[key].length - POINTS);
    }
    drawCharts();
  }

  function renderHealth(health, tunnels) {
    text($('health-status'), health.status);
    text($('health-uptime'), uptime(health.uptime_seconds));
    text($('health-connected'), health.connected);
    text($('health-registered'), health.registered);
    const nodes = health.cluster_nodes === null ? '' : ` (${health.cluster_nodes} nodes)`;
    text($('health-cluster'), health.cluster + nodes);
    text($('health-tunnel'), tunnels.services.length ? tunnels.active : 'no tunnel');
  }

  function matches(client, field, needle) {
    if (!needle) return true;
    const fields = field === 'any' ? ['uuid', 'name', 'user', 'node'] : [field];
    return fields.some((f) => String(client[f] ?? '').toLowerCase().includes(needle));
  }

  function renderClients() {
    const needle = $('client-filter').value.trim().toLowerCase();
    const field = $('client-filter-field').value;
    const body = $('clients').tBodies[0];
    body.replaceChildren();
    const shown = state.clients.filter((c) => matches(c, field, needle));
    for (const c of shown) {
      const row = body.insertRow();
      row.dataset.uuid = c.uuid;
      cell(row, c.uuid).className = 'mono';
      cell(row, c.name);
      cell(row, c.user);
      cell(row, c.node);
      cell(row, c.remote_address);
      cell(row, c.connected_since);
      cell(row, c.messages_forwarded);
    }
    text($('client-count'), state.denied ? '' : `${shown.length} shown of ${state.clients.length}`);
  }

  function renderTunnels(tunnels) {
    const root = $('tunnels');
    root.replaceChildren();
    text($('tunnels-summary'), tunnels.services.length
      ? `${tunnels.active} open, agents connect to ${tunnels.agents_listener}` : 'none configured');
    for (const service of tunnels.services) {
      const box = document.createElement('article');
      box.className = 'service';
      box.dataset.service = service.name;
      const title = document.createElement('h3');
      text(title, `${service.name} (${service.type}) on ${service.bind}`);
      const facts = document.createElement('p');
      const udp = service.udp_sessions === undefined ? '' : `, ${service.udp_sessions} UDP sessions`;
      text(facts, `${service.active} active, pool ${service.pool_idle} idle, ${service.waiting} waiting${udp}, agents: ${service.agents.length}`);
      const table = document.createElement('table');
      const head = table.createTHead().insertRow();
      for (const h of ['agent session', 'address', 'connected', 'pool idle']) cell(head, h);
      const body = table.createTBody();
      for (const agent of service.agents) {
        const row = body.insertRow();
        cell(row, agent.session);
        cell(row, agent.addr);
        cell(row, uptime(agent.connected_seconds));
        cell(row, agent.pool_idle);
      }
      box.append(title, facts, table);
      root.append(box);
    }
  }

  function renderCluster(health) {
    const body = $('cluster-nodes').tBodies[0];
    body.replaceChildren();
    const ids = health.cluster_node_ids || [];
    text($('cluster-summary'), health.cluster === 'off' ? 'cluster off' : `${health.cluster}, ${ids.length} alive`);
    $('cluster-nodes').hidden = ids.length === 0;
    for (const id of ids) {
      const row = body.insertRow();
      row.dataset.node = id;
      cell(row, id);
      cell(row, state.clients.filter((c) => c.node === id).length);
    }
  }

  // A 401 (or no token at all): nothing the relay said stays on the page.
  function clearAll(message) {
    state.health = null;
    state.clients = [];
    state.previous = null;
    for (const key of Object.keys(state.series)) state.series[key] = [];
    drawCharts();
    for (const id of ['health-status', 'health-uptime', 'health-connected', 'health-registered', 'health-cluster', 'health-tunnel']) text($(id), null);
    renderClients();
    $('tunnels').replaceChildren();
    $('cluster-nodes').tBodies[0].replaceChildren();
    for (const id of ['tunnels-summary', 'cluster-summary']) text($(id), '');
    markStale(null);
    setStatus(message, 'error');
  }

  // Everything shown is from the last good read, at `since` (a Date), or
  // current (null).
  function markStale(since) {
    state.staleSince = since;
    $('dashboard').classList.toggle('stale', since !== null);
    const note = $('stale-note');
    note.hidden = since === null;
    text(note, since === null ? ''
      : `stale since ${since.toLocaleTimeString()}: the relay does not answer; the values below are from the last read that did`);
  }

  function setStatus(message, kind) {
    const status = $('status');
    status.textContent = message;
    status.className = `status ${kind || ''}`;
  }

  // One read at a time; a read started before the token changed is dropped.
  async function poll() {
    if (state.busy) return;
    state.busy = true;
    const generation = state.generation;
    try {
      const [health, clients, tunnels, metrics] = await Promise.all([
        get('/health'), get('/clients'), get('/tunnels'), get('/metrics', 'text'),
      ]);
      if (generation !== state.generation) return;
      state.denied = false;
      state.health = health;
      state.clients = clients;
      state.tunnels = tunnels;
      state.polls += 1;
      renderHealth(health, tunnels);
      renderClients();
      renderTunnels(tunnels);
      renderCluster(health);
      addPoint(parseMetrics(metrics), health);
      markStale(null);
      setStatus(`updated ${new Date().toLocaleTimeString()}`, 'ok');
    } catch (error) {
      if (generation !== state.generation) return;
      if (error instanceof Denied) {
        state.denied = true;
        stop();
        clearAll('401: the admin token is missing or wrong — no data. Enter the admin token above.');
      } else {
        if (state.staleSince === null) markStale(new Date());
        const reason = error.name === 'TimeoutError' ? `no answer within ${READ_MS / 1000} s` : error.message;
        setStatus(`cannot read the relay: ${reason}`, 'error');
      }
    } finally {
      if (generation === state.generation) state.busy = false;
    }
  }

  function stop() {
    if (state.timer !== null) clearInterval(state.timer);
    state.timer = null;
  }

  function start() {
    stop();
    state.generation += 1;
    state.busy = false;
    poll();
    state.timer = setInterval(poll, POLL_MS);
  }

  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    state.token = $('token').value;
    $('token').value = '';
    sessionStorage.setItem(TOKEN_KEY, state.token);
    clearAll('connecting…');
    start();
  });
  // A new #token=… in the address (no reload): use it.
  window.addEventListener('hashchange', () => {
    if (!new URLSearchParams(location.hash.slice(1)).has('token')) return;
    state.token = takeToken();
    clearAll('connecting…');
    start();
  });
  $('client-filter').addEventListener('input', renderClients);
  $('client-filter-field').addEventListener('change', renderClients);

  window.switchboardDashboard = { state, charts };
  state.token = takeToken();
  start();
})();
